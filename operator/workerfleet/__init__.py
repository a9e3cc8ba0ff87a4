"""workerfleet: a Kubernetes operator for fleets of queue-consuming workers."""

__version__ = "0.1.0"
