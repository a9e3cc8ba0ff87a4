"""kopf handlers: thin glue between the API server's events and workerfleet's planners.

Importing this package registers the handlers with kopf's default registry.
"""

from workerfleet.handlers import (
    activity,
    autoscaling,
    breaker,
    held_jobs,
    metrics_api,
    pool_metrics,
    rollout,
    schedules,
    startup,
    workerpool,
)

__all__ = [
    "activity",
    "autoscaling",
    "breaker",
    "held_jobs",
    "metrics_api",
    "pool_metrics",
    "rollout",
    "schedules",
    "startup",
    "workerpool",
]
