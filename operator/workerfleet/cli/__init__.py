"""The `workerfleet` command line."""
