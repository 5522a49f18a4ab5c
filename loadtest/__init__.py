"""Load tests of a running retrieval server: a Locust file, a headless runner and a capacity search."""
