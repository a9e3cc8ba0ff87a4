"""Policy decisions as tables: each row is the facts and the decision the runtime must carry out."""

from __future__ import annotations

from typing import Any

import pytest

from workerfleet.api.jobtype import Backoff, FailureClass, JobTypeSpec
from workerfleet.api.worker_contract import Outcome
from workerfleet.worker.policy import (
    CLAIM_RECHECK_MAX_SECONDS,
    CLAIM_RECHECK_MIN_SECONDS,
    Complete,
    Defer,
    Failure,
    FailureReason,
    Remove,
    RetryLater,
    admit,
    after_failure,
    after_review_request,
    backoff_delay,
    claim_lease_seconds,
    claim_recheck_delay,
    idempotency_key,
    reject_invalid,
)


def spec(**fields: Any) -> JobTypeSpec:
    return JobTypeSpec.model_validate({"lane": "fast", "timeoutSeconds": 10, **fields})


RETRY = {"maxAttempts": 3, "backoff": {"initialSeconds": 1, "maxSeconds": 5, "multiplier": 2, "jitter": 0}}
WITH_DLQ = spec(retry=RETRY, deadLetter={"queue": "dlq"}, review={"queue": "inbox"})
WITHOUT_DLQ = spec(retry=RETRY)
WITH_DEADLINE = spec(retry=RETRY, deadLetter={"queue": "dlq"}, deadlineSeconds=10)


@pytest.mark.parametrize(
    ("attempt", "backoff", "sample", "expected"),
    [
        (1, Backoff(initial_seconds=1, max_seconds=300, multiplier=2, jitter=0), 0.5, 1.0),
        (2, Backoff(initial_seconds=1, max_seconds=300, multiplier=2, jitter=0), 0.5, 2.0),
        (4, Backoff(initial_seconds=1, max_seconds=300, multiplier=2, jitter=0), 0.5, 8.0),
        (20, Backoff(initial_seconds=1, max_seconds=300, multiplier=2, jitter=0), 0.5, 300.0),
        (100, Backoff(initial_seconds=1, max_seconds=60, multiplier=10, jitter=0), 0.0, 60.0),
        (3, Backoff(initial_seconds=5, max_seconds=300, multiplier=1, jitter=0), 0.9, 5.0),
        (1, Backoff(initial_seconds=10, max_seconds=300, multiplier=2, jitter=0.5), 0.0, 10.0),
        (1, Backoff(initial_seconds=10, max_seconds=300, multiplier=2, jitter=0.5), 0.5, 7.5),
        (20, Backoff(initial_seconds=1, max_seconds=100, multiplier=2, jitter=0.2), 0.999, 80.02),
    ],
)
def test_backoff_grows_caps_and_jitters_downward(
    attempt: int, backoff: Backoff, sample: float, expected: float
) -> None:
    assert backoff_delay(attempt, backoff, sample) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", range(1, 30))
def test_backoff_never_exceeds_max_seconds(attempt: int) -> None:
    backoff = Backoff(initial_seconds=0.5, max_seconds=42, multiplier=3, jitter=1)
    for sample in (0.0, 0.25, 0.999):
        assert 0 <= backoff_delay(attempt, backoff, sample) <= 42


@pytest.mark.parametrize(
    ("failure", "attempt", "age", "job_type", "expected"),
    [
        (Failure(FailureClass.TRANSIENT, "x"), 1, 0, WITH_DLQ, RetryLater(1.0)),
        (Failure(FailureClass.TRANSIENT, "x"), 2, 0, WITH_DLQ, RetryLater(2.0)),
        (
            Failure(FailureClass.TRANSIENT, "x"),
            3,
            0,
            WITH_DLQ,
            Remove(Outcome.DEAD_LETTERED, FailureReason.ATTEMPTS_EXHAUSTED, "dlq"),
        ),
        (
            Failure(FailureClass.TRANSIENT, "x"),
            3,
            0,
            WITHOUT_DLQ,
            Remove(Outcome.FAILED, FailureReason.ATTEMPTS_EXHAUSTED, None),
        ),
        (Failure(FailureClass.UNKNOWN, "x"), 1, 0, WITH_DLQ, RetryLater(1.0)),
        (Failure(FailureClass.TIMEOUT, "x"), 2, 0, WITH_DLQ, RetryLater(2.0)),
        (
            Failure(FailureClass.POLICY, "x"),
            1,
            0,
            WITH_DLQ,
            Remove(Outcome.DEAD_LETTERED, FailureReason.NOT_RETRYABLE, "dlq"),
        ),
        (
            Failure(FailureClass.VALIDATION, "x"),
            1,
            0,
            WITH_DLQ,
            Remove(Outcome.DEAD_LETTERED, FailureReason.NOT_RETRYABLE, "dlq"),
        ),
        (
            Failure(None, "x"),
            1,
            0,
            WITH_DLQ,
            Remove(Outcome.DEAD_LETTERED, FailureReason.PERMANENT_ERROR, "dlq"),
        ),
        (Failure(None, "x"), 1, 0, WITHOUT_DLQ, Remove(Outcome.FAILED, FailureReason.PERMANENT_ERROR, None)),
        # Within the deadline only while the next attempt still starts before it.
        (Failure(FailureClass.TRANSIENT, "x"), 1, 8.5, WITH_DEADLINE, RetryLater(1.0)),
        (
            Failure(FailureClass.TRANSIENT, "x"),
            2,
            8.5,
            WITH_DEADLINE,
            Remove(Outcome.EXPIRED, FailureReason.DEADLINE_EXCEEDED, "dlq"),
        ),
        # A class left out of retryOn is not retried, even when not in failFastOn either.
        (
            Failure(FailureClass.UNKNOWN, "x"),
            1,
            0,
            spec(retry={**RETRY, "retryOn": ["transient"], "failFastOn": []}),
            Remove(Outcome.FAILED, FailureReason.NOT_RETRYABLE, None),
        ),
        (
            Failure(FailureClass.TRANSIENT, "x"),
            1,
            0,
            spec(retry={"maxAttempts": 1}, deadLetter={"queue": "dlq"}),
            Remove(Outcome.DEAD_LETTERED, FailureReason.ATTEMPTS_EXHAUSTED, "dlq"),
        ),
    ],
)
def test_after_failure(
    failure: Failure, attempt: int, age: float, job_type: JobTypeSpec, expected: RetryLater | Remove
) -> None:
    assert (
        after_failure(failure, attempt=attempt, age_seconds=age, spec=job_type, jitter_sample=0.3) == expected
    )


@pytest.mark.parametrize(
    ("age", "deadline", "completed", "expected"),
    [
        (0, None, False, None),
        (10_000, None, False, None),
        (9.9, 10, False, None),
        (10.0, 10, False, None),
        (10.1, 10, False, Remove(Outcome.EXPIRED, FailureReason.DEADLINE_EXCEEDED, "dlq")),
        (0, 10, True, Complete(Outcome.DUPLICATE)),
        (99, 10, True, Complete(Outcome.DUPLICATE)),
    ],
)
def test_admit(age: float, deadline: int | None, completed: bool, expected: Complete | Remove | None) -> None:
    decision = admit(
        age_seconds=age, deadline_seconds=deadline, already_completed=completed, dead_letter="dlq"
    )
    assert decision == expected


@pytest.mark.parametrize(
    ("age", "completed", "held_for", "expected"),
    [
        # A copy of a job running elsewhere waits, late or not: that one may still complete it.
        (0, False, 20.0, Defer(2.0)),
        (99, False, 20.0, Defer(2.0)),
        # Once completed, any copy is a duplicate, whatever the claim says.
        (0, True, 20.0, Complete(Outcome.DUPLICATE)),
    ],
)
def test_admit_a_copy_whose_key_is_claimed_elsewhere(
    age: float, completed: bool, held_for: float, expected: Complete | Defer
) -> None:
    decision = admit(
        age_seconds=age,
        deadline_seconds=10,
        already_completed=completed,
        dead_letter="dlq",
        claimed_elsewhere_for=held_for,
    )
    assert decision == expected


@pytest.mark.parametrize(
    ("held_for", "expected"),
    [
        (0.001, CLAIM_RECHECK_MIN_SECONDS),
        (14.0, 1.4),
        (120.0, 12.0),
        (86_400.0, CLAIM_RECHECK_MAX_SECONDS),
    ],
)
def test_a_copy_looks_again_after_a_tenth_of_the_lease_left_within_bounds(
    held_for: float, expected: float
) -> None:
    assert claim_recheck_delay(held_for) == pytest.approx(expected)


@pytest.mark.parametrize("timeout", [1, 300, 86_400])
def test_a_claim_outlives_the_longest_attempt_and_its_cancel_grace(timeout: int) -> None:
    lease = claim_lease_seconds(timeout, cancel_grace_seconds=5.0)
    assert lease > timeout + 5.0
    assert lease <= timeout + 5.0 + 10.0  # not much longer: a dead holder's job waits for it


def test_expired_without_a_dead_letter_queue_is_dropped_but_still_counted_as_expired() -> None:
    decision = admit(age_seconds=11, deadline_seconds=10, already_completed=False, dead_letter=None)
    assert decision == Remove(Outcome.EXPIRED, FailureReason.DEADLINE_EXCEEDED, None)


@pytest.mark.parametrize(
    ("job_type", "expected"),
    [
        (WITH_DLQ, Remove(Outcome.DEAD_LETTERED, FailureReason.VALIDATION_FAILED, "dlq")),
        (WITHOUT_DLQ, Remove(Outcome.FAILED, FailureReason.VALIDATION_FAILED, None)),
        # Even a policy that would retry validation failures does not retry an invalid payload.
        (
            spec(retry={"retryOn": ["validation"], "failFastOn": []}, deadLetter={"queue": "dlq"}),
            Remove(Outcome.DEAD_LETTERED, FailureReason.VALIDATION_FAILED, "dlq"),
        ),
    ],
)
def test_invalid_payloads_are_dead_lettered_at_once(job_type: JobTypeSpec, expected: Remove) -> None:
    assert reject_invalid(job_type) == expected


@pytest.mark.parametrize(
    ("job_type", "expected"),
    [
        (WITH_DLQ, Remove(Outcome.REVIEW, FailureReason.NEEDS_REVIEW, "inbox")),
        (spec(deadLetter={"queue": "dlq"}), Remove(Outcome.DEAD_LETTERED, FailureReason.NEEDS_REVIEW, "dlq")),
        (WITHOUT_DLQ, Remove(Outcome.FAILED, FailureReason.NEEDS_REVIEW, None)),
    ],
)
def test_review_requests(job_type: JobTypeSpec, expected: Remove) -> None:
    assert after_review_request(job_type) == expected


@pytest.mark.parametrize(
    ("payload", "key_field", "expected"),
    [
        ({"id": "a1"}, "id", "a1"),
        ({"id": 42}, "id", "42"),
        ({"order": {"id": "o-7"}}, "order.id", "o-7"),
        ({"order": {"id": "o-7"}}, "order.number", None),
        ({"order": "o-7"}, "order.id", None),
        ({"id": ""}, "id", None),
        ({"id": True}, "id", None),
        ({"id": 1.5}, "id", None),
        ({"id": {"nested": 1}}, "id", None),
        (["id"], "id", None),
        (None, "id", None),
    ],
)
def test_idempotency_key(payload: Any, key_field: str, expected: str | None) -> None:
    assert idempotency_key(payload, key_field) == expected
