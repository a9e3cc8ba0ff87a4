"""Operator-wide settings that matter in production, applied once at start-up."""

from __future__ import annotations

from typing import Any

import kopf

FIELD_MANAGER = "workerfleet"
ANNOTATION_PREFIX = "workerfleet.dev"

WATCH_SERVER_TIMEOUT_SECONDS = 300
WATCH_CLIENT_TIMEOUT_SECONDS = 330
# Bookmarks arrive every 60 s; a stream silent for longer than this is dead, so reconnect.
WATCH_INACTIVITY_TIMEOUT_SECONDS = 90
MAX_CONCURRENT_RECONCILES = 16
"""Threads that run blocking reconciles: caps the API calls in flight from one operator replica.

This is a limit on threads, not kopf's `queueing.worker_limit`: kopf's per-object workers are cheap
tasks and stay unlimited, so none can hold a slot that another object's start-up waits for (with a
worker limit and a kopf index, every worker waits for all objects to be indexed, and more objects
than the limit never start)."""
REQUEST_TIMEOUT_SECONDS = 30
API_ERROR_BACKOFFS_SECONDS = (0.5, 1.0, *([2.0] * 29))
"""kopf's retries of a failed API request (its watch streams' included), ~60 s in all as kopf's own
default, but never more than 2 s apart: kopf's default (1, 1, 2, 3, 5, 8, 13, 21) sleeps up to 21 s
between attempts, so a watch could come back half a minute after the API server did."""


def apply_settings(settings: kopf.OperatorSettings) -> None:
    """Tune kopf for a long-running, shared production API server."""
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_SECONDS
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_SECONDS
    settings.watching.inactivity_timeout = WATCH_INACTIVITY_TIMEOUT_SECONDS
    settings.networking.request_timeout = REQUEST_TIMEOUT_SECONDS
    settings.networking.connect_timeout = 10
    settings.networking.error_backoffs = API_ERROR_BACKOFFS_SECONDS
    settings.queueing.worker_limit = None
    settings.execution.max_workers = MAX_CONCURRENT_RECONCILES
    # kopf's bookkeeping goes into annotations: a structural CRD schema would prune it from status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.reporting_component = "workerfleet"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    apply_settings(settings)
