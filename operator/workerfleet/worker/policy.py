"""What happens to a job, decided from plain values: the JobType's policy, the job's age and attempt.

No I/O here: the runtime gathers the facts (age, whether the idempotency key was seen, how the attempt
failed), asks these functions, and carries out the decision on the queue backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from workerfleet.api.jobtype import Backoff, FailureClass, JobTypeSpec
from workerfleet.api.worker_contract import Outcome


class FailureReason(StrEnum):
    """Why a job left the queue other than by succeeding; written into the envelope's lastFailure."""

    ATTEMPT_FAILED = "AttemptFailed"
    VALIDATION_FAILED = "ValidationFailed"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    ATTEMPTS_EXHAUSTED = "AttemptsExhausted"
    NOT_RETRYABLE = "NotRetryable"
    PERMANENT_ERROR = "PermanentError"
    NEEDS_REVIEW = "NeedsReview"
    UNKNOWN_JOB_TYPE = "UnknownJobType"
    MALFORMED_ENVELOPE = "MalformedEnvelope"
    MESSAGE_TOO_LARGE = "MessageTooLarge"
    """The message is longer than the worker's bound (WORKERFLEET_MAX_MESSAGE_BYTES): never parsed."""
    NESTING_TOO_DEEP = "NestingTooDeep"
    """The message nests deeper than the worker's bound (WORKERFLEET_MAX_NESTING_DEPTH): never parsed."""
    CRASHED = "Crashed"
    """The job was handed out maxAttempts times and its worker died every time (SIGKILL, OOM, segfault)."""


@dataclass(frozen=True)
class Failure:
    """How an attempt failed: a failure class from the JobType API, or None when the handler said no
    attempt can ever succeed (PermanentError)."""

    failure_class: FailureClass | None
    message: str


@dataclass(frozen=True)
class Complete:
    """Acknowledge the job: it is done, now or before."""

    outcome: Outcome


@dataclass(frozen=True)
class RetryLater:
    """Put the job back for its next attempt after a delay."""

    delay_seconds: float
    outcome: Outcome = Outcome.RETRIED
    reason: FailureReason = FailureReason.ATTEMPT_FAILED


@dataclass(frozen=True)
class Remove:
    """Take the job off the queue for good, moving it to `queue` (dead-letter or review), or dropping it
    when `queue` is None."""

    outcome: Outcome
    reason: FailureReason
    queue: str | None


Decision = Complete | RetryLater | Remove


@dataclass(frozen=True)
class Defer:
    """Put the job back unchanged for a later look: a copy of it (same idempotency key) is running on
    another worker. Not an attempt: not counted as one, never dead-lettered for it."""

    delay_seconds: float


CLAIM_SETTLE_MARGIN_SECONDS = 5.0
"""Added to an attempt's longest run for a key claim's lease: the time to settle the job after it."""
CLAIM_RECHECK_MIN_SECONDS = 1.0
CLAIM_RECHECK_MAX_SECONDS = 30.0


def claim_lease_seconds(timeout_seconds: int, cancel_grace_seconds: float) -> float:
    """How long a claim on a keyed job's key lasts: past the longest an attempt can run (its timeout,
    then the grace a cancelled handler gets) and its settling, so it ends only when its holder died."""
    return timeout_seconds + cancel_grace_seconds + CLAIM_SETTLE_MARGIN_SECONDS


def claim_recheck_delay(held_for_seconds: float) -> float:
    """How long a copy waits before it looks again at a key claimed elsewhere for `held_for_seconds`
    more: a tenth of that, within 1-30 s, so a copy of a short job is settled soon after the first ends
    and one of a long job does not come back every second."""
    return min(max(held_for_seconds / 10, CLAIM_RECHECK_MIN_SECONDS), CLAIM_RECHECK_MAX_SECONDS)


def give_up(reason: FailureReason, dead_letter_queue: str | None) -> Remove:
    """The job failed for good: dead-letter it when there is a queue for that, else drop it."""
    if dead_letter_queue is None:
        return Remove(Outcome.FAILED, reason, None)
    return Remove(Outcome.DEAD_LETTERED, reason, dead_letter_queue)


def dead_letter_queue(spec: JobTypeSpec) -> str | None:
    return spec.dead_letter.queue if spec.dead_letter else None


def admit(
    *,
    age_seconds: float,
    deadline_seconds: int | None,
    already_completed: bool,
    dead_letter: str | None,
    claimed_elsewhere_for: float | None = None,
) -> Decision | Defer | None:
    """Before an attempt: None means run it. A completed job is a duplicate even when it is also late,
    because it did run; a copy of a job running elsewhere (its key claimed there for
    `claimed_elsewhere_for` more seconds) waits for that one's end, late or not, as it may still
    complete; a late one expires instead of running."""
    if already_completed:
        return Complete(Outcome.DUPLICATE)
    if claimed_elsewhere_for is not None:
        return Defer(claim_recheck_delay(claimed_elsewhere_for))
    if deadline_seconds is not None and age_seconds > deadline_seconds:
        return Remove(Outcome.EXPIRED, FailureReason.DEADLINE_EXCEEDED, dead_letter)
    return None


def crashed_too_often(deliveries: int, spec: JobTypeSpec) -> Remove | None:
    """Before an attempt: a job handed out more than maxAttempts times without ever being settled took
    its worker down each time; running it again would only kill another one."""
    if deliveries > spec.retry.max_attempts:
        return give_up(FailureReason.CRASHED, dead_letter_queue(spec))
    return None


def reject_invalid(spec: JobTypeSpec) -> Remove:
    """The payload does not match the input schema: the same payload fails the same way every time, so it
    is dead-lettered at once whatever retryOn says."""
    return give_up(FailureReason.VALIDATION_FAILED, dead_letter_queue(spec))


def backoff_delay(failed_attempt: int, backoff: Backoff, jitter_sample: float) -> float:
    """Seconds to wait after attempt `failed_attempt` (1-based) failed.

    initialSeconds x multiplier^(attempt-1), capped at maxSeconds, then shortened by up to `jitter` of
    itself (`jitter_sample` in [0, 1) picks how much), so a burst of failures does not come back at once
    and no delay exceeds maxSeconds.
    """
    exponent = max(failed_attempt - 1, 0)
    growth = backoff.multiplier**exponent
    base = min(backoff.initial_seconds * growth, backoff.max_seconds)
    return base * (1.0 - backoff.jitter * jitter_sample)


def after_failure(
    failure: Failure, *, attempt: int, age_seconds: float, spec: JobTypeSpec, jitter_sample: float
) -> RetryLater | Remove:
    """After attempt `attempt` failed: retry later, or give up with the reason."""
    retry = spec.retry
    dead_letter = dead_letter_queue(spec)
    if failure.failure_class is None:
        return give_up(FailureReason.PERMANENT_ERROR, dead_letter)
    if failure.failure_class in retry.fail_fast_on or failure.failure_class not in retry.retry_on:
        return give_up(FailureReason.NOT_RETRYABLE, dead_letter)
    if attempt >= retry.max_attempts:
        return give_up(FailureReason.ATTEMPTS_EXHAUSTED, dead_letter)
    delay = backoff_delay(attempt, retry.backoff, jitter_sample)
    if spec.deadline_seconds is not None and age_seconds + delay > spec.deadline_seconds:
        # The next attempt would start past the deadline: expire now rather than hold the job for nothing.
        return Remove(Outcome.EXPIRED, FailureReason.DEADLINE_EXCEEDED, dead_letter)
    return RetryLater(delay)


def after_review_request(spec: JobTypeSpec) -> Remove:
    """The handler marked its result ambiguous: the review queue, or dead-letter when there is none."""
    if spec.review is not None:
        return Remove(Outcome.REVIEW, FailureReason.NEEDS_REVIEW, spec.review.queue)
    return give_up(FailureReason.NEEDS_REVIEW, dead_letter_queue(spec))


def idempotency_key(payload: Any, key_field: str) -> str | None:
    """The value at the dotted `key_field` of the payload, as text; None when absent or not a scalar id."""
    value = payload
    for part in key_field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text or None


def with_job_deadline(spec: JobTypeSpec, job_deadline_seconds: int | None) -> JobTypeSpec:
    """The JobType's policy for one job that carries a deadline of its own: the shorter one counts."""
    if job_deadline_seconds is None:
        return spec
    if spec.deadline_seconds is not None and spec.deadline_seconds <= job_deadline_seconds:
        return spec
    return spec.model_copy(update={"deadline_seconds": job_deadline_seconds})
