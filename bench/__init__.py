"""sockbench's command line and benchmark suite (``bench``)."""
