"""The worker runtime: the library worker images use to consume a WorkerPool's jobs.

Write handlers, run `workerfleet worker --handlers my.module`, and every job gets the JobType's policy:

    from workerfleet import worker

    @worker.handler("resize-image")
    async def resize(job: worker.Job) -> None:
        ...                                   # raise worker.TransientError("...") to retry later

Contract with the operator:
- Policy file (ConfigMap mounted at /etc/workerfleet/policies.json, or WORKERFLEET_POLICIES):
  {"jobTypes": {"<job type name>": <JobType .spec exactly as in the CRD, camelCase>}}.
- Environment: WORKERFLEET_POOL, WORKERFLEET_REVISION, WORKERFLEET_QUEUE (the WorkerPool's .spec.queue as
  JSON), WORKERFLEET_QUEUE_USERNAME / WORKERFLEET_QUEUE_PASSWORD (from the queue's auth Secret refs),
  WORKERFLEET_DRAIN_SECONDS; the full list is in `workerfleet.worker.settings`.
- Job envelope (JSON; see `workerfleet.worker.envelope`): id, type, payload, enqueuedAt, attempt,
  deadlineSeconds (optional), lastFailure.
- On WORKERFLEET_METRICS_PORT (default 8000): /metrics
  (workerfleet_jobs_total{pool,revision,job_type,outcome}, workerfleet_job_duration_seconds,
  workerfleet_jobs_in_flight), /healthz (the consume loop turns) and
  /readyz (connected to the queue); see `workerfleet.worker.health`.
- Producers: `workerfleet enqueue` or `workerfleet.producer` build and check envelopes.
- SIGTERM: stop taking jobs, finish in-flight ones within the drain time, give back the rest, exit 0.

What happens to a job: payload checked against input.schema (mismatch: dead-lettered, ValidationFailed);
older than deadlineSeconds: expired (dead-lettered, DeadlineExceeded, not run); idempotency key already
completed: acknowledged as a duplicate, not run; handler run with timeoutSeconds; a failure whose class is
in retryOn is retried with exponential backoff and jitter up to maxAttempts, anything else (and
PermanentError) is dead-lettered with the reason; NeedsReview sends it to the review queue. A job whose
worker died holding it more than maxAttempts times is dead-lettered (Crashed) without running again;
messages that are not envelopes, or name a type nobody serves, are dead-lettered too, never deleted.
"""

from workerfleet.worker.errors import JobError, NeedsReview, PermanentError, PolicyError, TransientError
from workerfleet.worker.handlers import Job, handler
from workerfleet.worker.producer import enqueue

__all__ = [
    "Job",
    "JobError",
    "NeedsReview",
    "PermanentError",
    "PolicyError",
    "TransientError",
    "enqueue",
    "handler",
]
