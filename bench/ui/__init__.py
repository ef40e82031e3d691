"""``bench ui`` (Locust's web UI against a backend) and ``bench worker`` (Locust workers
joining a master elsewhere). Runs in the supervisor; Locust is a child process."""
