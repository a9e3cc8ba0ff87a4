"""Which queues hold a pool's jobs waiting for a person or failed for good, and what status.queue says
of them after a read. Pure: names and numbers in, a merge patch out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.queue_kinds import kind_of
from workerfleet.api.workerpool import Queue


def pool_dead_letter_queue(queue: Queue) -> str:
    """Where the workers put messages no JobType can take: `<queue>.dlq` on the pool's own server."""
    kind, backend = kind_of(queue)
    return f"{kind.queue_name(backend) or 'workerfleet'}.dlq"


def review_queues(job_types: Mapping[str, JobTypeSpec]) -> list[str]:
    """The review queues of the JobTypes a pool serves, each once, in a fixed order."""
    return list(dict.fromkeys(spec.review.queue for spec in job_types.values() if spec.review is not None))


def dead_letter_queues(queue: Queue, job_types: Mapping[str, JobTypeSpec]) -> list[str]:
    """The JobTypes' dead-letter queues, then the pool's own, each once."""
    names = [spec.dead_letter.queue for spec in job_types.values() if spec.dead_letter is not None]
    return list(dict.fromkeys([*names, pool_dead_letter_queue(queue)]))


def plan_held_status(
    current: Mapping[str, Any], review_depth: int, dead_letter_depth: int
) -> dict[str, Any] | None:
    """The merge patch of status.queue's review and dead-letter depths; None when it says so already,
    so an idle pool costs no writes."""
    queue = current.get("queue") or {}
    if queue.get("reviewDepth") == review_depth and queue.get("deadLetterDepth") == dead_letter_depth:
        return None
    return {"queue": {"reviewDepth": review_depth, "deadLetterDepth": dead_letter_depth}}
