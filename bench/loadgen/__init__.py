"""Code that runs inside the Locust process: the native load engine and the users that drive it."""
