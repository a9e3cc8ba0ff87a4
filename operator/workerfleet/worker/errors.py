"""Exceptions a handler raises to say how its attempt failed; the JobType's retry policy decides what follows.

Any other exception counts as failure class `unknown`, which the default policy retries.
"""

from __future__ import annotations

from workerfleet.api.jobtype import FailureClass


class JobError(Exception):
    """An attempt failed for a reason the handler understands."""

    failure_class: FailureClass | None = FailureClass.UNKNOWN
    """Class matched against the JobType's retryOn and failFastOn; None for a permanent failure."""


class TransientError(JobError):
    """A passing problem (connection reset, 503, lock contention): another attempt may succeed."""

    failure_class = FailureClass.TRANSIENT


class PolicyError(JobError):
    """A rule refused the job (quota, permission); class `policy`, which the default policy never retries."""

    failure_class = FailureClass.POLICY


class PermanentError(JobError):
    """No attempt can ever succeed (the input names something that does not exist, ...): dead-letter now,
    whatever the retry policy says."""

    failure_class = None


class NeedsReview(Exception):  # noqa: N818  (a verdict, not an error: the attempt itself ran fine)
    """The handler ran but cannot tell whether the result is right: a person should decide.

    The job goes to the JobType's review queue, neither retried nor dead-lettered.
    """
