"""Which queues hold a pool's review and dead-letter jobs, and when their depths are written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.workerpool import Queue
from workerfleet.backends.held import entered_age_seconds
from workerfleet.planners.held import (
    dead_letter_queues,
    plan_held_status,
    pool_dead_letter_queue,
    review_queues,
)

QUEUE = Queue.model_validate({"rabbitmq": {"address": "rabbit:5672", "queue": "thumbs"}})
JOB_TYPES = {
    "resize": JobTypeSpec.model_validate(
        {"lane": "fast", "timeoutSeconds": 5, "review": {"queue": "inbox"}, "deadLetter": {"queue": "failed"}}
    ),
    "crop": JobTypeSpec.model_validate(
        {
            "lane": "fast",
            "timeoutSeconds": 5,
            "review": {"queue": "inbox"},
            "deadLetter": {"queue": "thumbs.dlq"},
        }
    ),
    "plain": JobTypeSpec.model_validate({"lane": "fast", "timeoutSeconds": 5}),
}


def test_each_queue_is_read_once_and_the_pools_own_dead_letter_queue_is_always_among_them() -> None:
    assert pool_dead_letter_queue(QUEUE) == "thumbs.dlq"
    assert review_queues(JOB_TYPES) == ["inbox"]
    assert dead_letter_queues(QUEUE, JOB_TYPES) == ["failed", "thumbs.dlq"]
    assert dead_letter_queues(QUEUE, {}) == ["thumbs.dlq"]


@pytest.mark.parametrize(
    ("status", "patch"),
    [
        ({}, {"queue": {"reviewDepth": 2, "deadLetterDepth": 0}}),
        ({"queue": {"depth": 5, "reviewDepth": 2, "deadLetterDepth": 0}}, None),
        (
            {"queue": {"reviewDepth": 1, "deadLetterDepth": 0}},
            {"queue": {"reviewDepth": 2, "deadLetterDepth": 0}},
        ),
    ],
)
def test_depths_are_written_only_when_they_changed(status: dict[str, object], patch: object) -> None:
    assert plan_held_status(status, 2, 0) == patch


@pytest.mark.parametrize(
    ("raw", "age"),
    [
        (b'{"lastFailure": {"at": "2026-01-01T11:00:00+00:00"}}', 3600.0),
        (b'{"lastFailure": {"at": "2026-01-01T11:00:00"}}', None),  # no time zone: cannot tell
        (b'{"enqueuedAt": "2026-01-01T11:00:00+00:00"}', None),
        (b"not json", None),
        (None, None),
    ],
)
def test_the_review_age_counts_from_when_the_job_got_to_the_queue(
    raw: bytes | None, age: float | None
) -> None:
    assert entered_age_seconds(raw, datetime(2026, 1, 1, 12, tzinfo=UTC)) == age
