"""The contract between the operator and the worker runtime, in one place.

The operator writes a worker pod's environment, mounts its policies and probes its port; the runtime
reads the same names, serves the same paths and exports the metrics the canary analysis counts. Both
sides import these names from here, so neither can drift from the other. The job envelope, the
contract between producers and workers, is `workerfleet.worker.envelope`.
"""

from __future__ import annotations

from enum import StrEnum


class WorkerEnv(StrEnum):
    """Environment variables of a worker container."""

    POOL = "WORKERFLEET_POOL"
    REVISION = "WORKERFLEET_REVISION"
    QUEUE = "WORKERFLEET_QUEUE"
    """The pool's spec.queue as JSON."""
    QUEUE_USERNAME = "WORKERFLEET_QUEUE_USERNAME"
    QUEUE_PASSWORD = "WORKERFLEET_QUEUE_PASSWORD"  # noqa: S105  (the variable's name, not a password)
    QUEUE_CA = "WORKERFLEET_QUEUE_CA"
    """PEM of the CA the queue's certificate is checked against."""
    STORE_USERNAME = "WORKERFLEET_STORE_USERNAME"
    STORE_PASSWORD = "WORKERFLEET_STORE_PASSWORD"  # noqa: S105  (the variable's name, not a password)
    STORE_CA = "WORKERFLEET_STORE_CA"
    """Credentials and CA of the RabbitMQ pool's idempotency store (queue.rabbitmq.idempotencyStore)."""
    POLICIES = "WORKERFLEET_POLICIES"
    """Path of the policies file."""
    WORKER_ID = "WORKERFLEET_WORKER_ID"
    HANDLERS = "WORKERFLEET_HANDLERS"
    CONCURRENCY = "WORKERFLEET_CONCURRENCY"
    DRAIN_SECONDS = "WORKERFLEET_DRAIN_SECONDS"
    HEARTBEAT_SECONDS = "WORKERFLEET_HEARTBEAT_SECONDS"
    STALL_SECONDS = "WORKERFLEET_STALL_SECONDS"
    METRICS_ADDRESS = "WORKERFLEET_METRICS_ADDRESS"
    METRICS_PORT = "WORKERFLEET_METRICS_PORT"
    LOG_LEVEL = "WORKERFLEET_LOG_LEVEL"
    MAX_MESSAGE_BYTES = "WORKERFLEET_MAX_MESSAGE_BYTES"
    """The longest message a worker parses; longer ones are dead-lettered as MessageTooLarge."""
    MAX_NESTING_DEPTH = "WORKERFLEET_MAX_NESTING_DEPTH"
    """How deep a message may nest arrays and objects; deeper ones are dead-lettered as NestingTooDeep."""


POLICIES_DIRECTORY = "/etc/workerfleet"
"""Where the pool's policies ConfigMap is mounted."""
POLICIES_FILE = "policies.json"
POLICIES_PATH = f"{POLICIES_DIRECTORY}/{POLICIES_FILE}"
BREAKER_FILE = "breaker.json"
"""Beside the policies, from the same ConfigMap: the pool's circuit breaker state, read again every
second (a ConfigMap volume is updated in place; the policies are read once, at start)."""

METRICS_PORT_NAME = "metrics"
"""The container port serving the three paths below."""
METRICS_PATH = "/metrics"
HEALTHZ_PATH = "/healthz"
"""200 while the consume loop turns: the liveness probe."""
READYZ_PATH = "/readyz"
"""200 while connected to the queue with the policies loaded: the readiness probe."""

JOBS_METRIC = "workerfleet_jobs_total"
"""Deliveries by pool, revision, job_type and outcome: what the canary analysis counts."""
FAILURES_METRIC = "workerfleet_job_failures_total"
"""Deliveries of failed attempts by pool, revision, job_type, outcome and failure_class (transient,
timeout, validation, policy, unknown; failures without a class are not in it): what the circuit
breaker's failureClasses judge."""
JOB_DURATION_METRIC = "workerfleet_job_duration_seconds"
JOBS_IN_FLIGHT_METRIC = "workerfleet_jobs_in_flight"
WORKER_START_TIME_METRIC = "workerfleet_worker_start_time_seconds"
"""When the worker process started, by pool and revision: the canary analysis counts its changes as
restarts."""


class Outcome(StrEnum):
    """How one delivery of a job ended; the `outcome` label of workerfleet_jobs_total.

    Every delivery the runtime takes ends in exactly one of these, except one given back unfinished
    on shutdown, and a copy of a keyed job put back to wait while another copy runs elsewhere.
    Error rate for canary analysis: (retried + dead_lettered + failed) / all but duplicate.
    """

    SUCCEEDED = "succeeded"
    RETRIED = "retried"
    """The attempt failed and the job was scheduled for another one."""
    DEAD_LETTERED = "dead_lettered"
    """The job failed for good and was moved to the JobType's dead-letter queue."""
    FAILED = "failed"
    """The job failed for good and was dropped, because no dead-letter queue applies."""
    EXPIRED = "expired"
    """The job outlived deadlineSeconds and was not run (again)."""
    DUPLICATE = "duplicate"
    """The job's idempotency key was already completed, so it was acknowledged without running."""
    REVIEW = "review"
    """The handler marked the result ambiguous and the job went to the review queue."""


ERROR_OUTCOMES = (Outcome.RETRIED, Outcome.DEAD_LETTERED, Outcome.FAILED)
"""Outcomes that count as a failed attempt."""
UNCOUNTED_OUTCOMES = (Outcome.DUPLICATE,)
"""Outcomes that are no attempt at all (a redelivered job already done), so not a sample."""
