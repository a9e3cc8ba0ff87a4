"""kopf handlers: thin glue between the API server's events and workerfleet's planners.

Importing this package registers the handlers with kopf's default registry.
"""

from workerfleet.handlers import (
    activity,
    autoscaling,
    breaker,
    metrics_api,
    pool_metrics,
    rollout,
    startup,
    workerpool,
)

__all__ = [
    "activity",
    "autoscaling",
    "breaker",
    "metrics_api",
    "pool_metrics",
    "rollout",
    "startup",
    "workerpool",
]
