"""JobType: a typed kind of job, with its time limits, retry policy and the API access its workers need."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from workerfleet.api.base import API_VERSION, ApiModel, Count, FieldErrorReason, ListSet, Rule, Timestamp
from workerfleet.api.common import DNS_SUBDOMAIN_MAX_LENGTH, QueueName
from workerfleet.api.conditions import Conditions
from workerfleet.api.meta import ObjectMeta

MAX_TIMEOUT_SECONDS = 86_400
MAX_DEADLINE_SECONDS = 30 * 86_400
MAX_PERMISSION_RULES = 32
MAX_PERMISSION_ITEMS = 16
MAX_RESOURCE_NAMES = 64


class Lane(StrEnum):
    """How long jobs of a type run; pools and their tuning are chosen per lane."""

    FAST = "fast"
    NORMAL = "normal"
    HEAVY = "heavy"


LANE_TIMEOUT_CEILING_SECONDS: dict[Lane, int] = {
    Lane.FAST: 300,
    Lane.NORMAL: 3_600,
    Lane.HEAVY: MAX_TIMEOUT_SECONDS,
}


_LANE_CEILINGS_CEL = (
    "{"
    + ", ".join(f"'{lane.value}': {seconds}" for lane, seconds in LANE_TIMEOUT_CEILING_SECONDS.items())
    + "}"
)
_LANE_CEILINGS_TEXT = ", ".join(
    f"{seconds} for {lane.value}" for lane, seconds in LANE_TIMEOUT_CEILING_SECONDS.items()
)


class Priority(StrEnum):
    """Which of a pool's jobs its workers take first: high before normal before low, weighted so that
    lower levels still get their share (see `workerfleet.planners.priority`)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class FailureClass(StrEnum):
    """Why an attempt failed, as the worker runtime classifies it."""

    TRANSIENT = "transient"
    TIMEOUT = "timeout"
    VALIDATION = "validation"
    POLICY = "policy"
    UNKNOWN = "unknown"


class Verb(StrEnum):
    """A Kubernetes API request verb a worker may be granted; wildcards and escalation verbs are absent."""

    GET = "get"
    LIST = "list"
    WATCH = "watch"
    CREATE = "create"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    DELETECOLLECTION = "deletecollection"


VERBS_WITHOUT_NAMES = (Verb.CREATE, Verb.DELETECOLLECTION)

FailureClasses = ListSet[Annotated[FailureClass, Field(strict=False)]]


class Input(ApiModel):
    """The shape of a job's payload."""

    payload_schema: Annotated[dict[str, Any], Field(alias="schema")]
    """JSON Schema (draft 2020-12) every payload must match. The worker runtime checks it before the
    first attempt; a payload that does not match fails with the failure class validation."""


class Backoff(ApiModel):
    """Delay between attempts: initialSeconds, growing by multiplier each attempt, capped at maxSeconds."""

    initial_seconds: Annotated[float, Field(gt=0, le=3_600)] = 1.0
    """Delay before the second attempt."""
    max_seconds: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_SECONDS)] = 300.0
    """Longest delay between two attempts."""
    multiplier: Annotated[float, Field(ge=1, le=10)] = 2.0
    """Factor by which the delay grows after each attempt; 1 keeps it constant."""
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Fraction of each delay that is randomised, so failed jobs do not all come back at once."""

    validations: ClassVar[tuple[Rule[Backoff], ...]] = (
        Rule(
            cel="self.initialSeconds <= self.maxSeconds",
            message="initialSeconds must not exceed maxSeconds",
            holds=lambda backoff: backoff.initial_seconds <= backoff.max_seconds,
            field_path=".initialSeconds",
        ),
    )


class Retry(ApiModel):
    """Which failures are retried, how often, and how long to wait in between."""

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    """Attempts in all, the first one included; 1 means never retry."""
    backoff: Backoff = Backoff()
    """Delay between attempts."""
    retry_on: Annotated[FailureClasses, Field(max_length=len(FailureClass))] = Field(
        default=[FailureClass.TRANSIENT, FailureClass.TIMEOUT, FailureClass.UNKNOWN]
    )
    """Failure classes that are retried until maxAttempts; any other failure ends the job at once.
    transient: a passing error the worker reported (connection reset, 503, lock contention);
    timeout: the attempt ran past timeoutSeconds; validation: the payload does not match the input
    schema; policy: the job was refused by a rule (quota, permission); unknown: any error the worker
    did not classify."""
    fail_fast_on: Annotated[FailureClasses, Field(max_length=len(FailureClass))] = Field(
        default=[FailureClass.VALIDATION, FailureClass.POLICY]
    )
    """Failure classes that must never be retried, stated so that the API server refuses a retryOn
    that lists one of them."""

    validations: ClassVar[tuple[Rule[Retry], ...]] = (
        Rule(
            cel="!self.retryOn.exists(c, c in self.failFastOn)",
            message="a failure class cannot be in both retryOn and failFastOn",
            holds=lambda retry: not set(retry.retry_on) & set(retry.fail_fast_on),
            field_path=".retryOn",
        ),
    )


class QueueRef(ApiModel):
    """A queue on the same backend as the pool that consumes the job type."""

    queue: QueueName
    """Name of the queue (a Redis list or stream key, a RabbitMQ queue)."""


class Idempotency(ApiModel):
    """How workers recognise a job they have already completed, so a redelivered job is not run twice."""

    key_field: Annotated[
        str,
        Field(min_length=1, max_length=253, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"),
    ]
    """Dotted path of the payload field whose value identifies a job, e.g. id or order.id."""
    ttl_seconds: Annotated[int, Field(ge=1, le=MAX_DEADLINE_SECONDS)] = 86_400
    """How long a completed job's key is remembered."""


def _no_wildcard(what: str) -> Rule[str]:
    return Rule(
        cel="!self.contains('*')",
        message=f"wildcards are not allowed: name each {what} the workers need",
        holds=lambda value: "*" not in value,
        reason=FieldErrorReason.FORBIDDEN,
    )


ApiGroup = Annotated[str, Field(max_length=DNS_SUBDOMAIN_MAX_LENGTH), _no_wildcard("API group")]
ResourceType = Annotated[
    str, Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX_LENGTH), _no_wildcard("resource")
]


class Permission(ApiModel):
    """One RBAC rule for the pool's Role: these verbs on these resources, optionally only these names."""

    api_groups: Annotated[list[ApiGroup], Field(min_length=1, max_length=MAX_PERMISSION_ITEMS)]
    """API groups of the resources; "" is the core group (configmaps, secrets, pods, ...)."""
    resources: Annotated[list[ResourceType], Field(min_length=1, max_length=MAX_PERMISSION_ITEMS)]
    """Resource types, plural and lower case (configmaps), or a subresource (deployments/scale)."""
    verbs: Annotated[ListSet[Annotated[Verb, Field(strict=False)]], Field(min_length=1, max_length=len(Verb))]
    """Requests allowed: get, list, watch, create, update, patch, delete or deletecollection."""
    resource_names: (
        Annotated[
            list[Annotated[str, Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX_LENGTH)]],
            Field(max_length=MAX_RESOURCE_NAMES),
        ]
        | None
    ) = None
    """Restrict the rule to objects of these names; absent means every object of the resources."""

    validations: ClassVar[tuple[Rule[Permission], ...]] = (
        Rule(
            cel="!has(self.resourceNames) || size(self.resourceNames) == 0"
            " || !self.verbs.exists(v, v == 'create' || v == 'deletecollection')",
            message="resourceNames cannot restrict create or deletecollection: Kubernetes authorizes"
            " those before the object's name is known",
            holds=lambda rule: (
                not rule.resource_names or not any(verb in VERBS_WITHOUT_NAMES for verb in rule.verbs)
            ),
            field_path=".resourceNames",
        ),
    )


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    """Every run is enqueued on time."""
    FORBID = "Forbid"
    """A run is skipped while the pool's queue still has jobs waiting at the operator's last read, so
    runs never pile up behind a backlog."""


class Schedule(ApiModel):
    """Enqueue this job type on a schedule, to every pool serving it, from the active operator."""

    cron: Annotated[str, Field(min_length=9, max_length=200)]
    """Cron syntax: five fields (minute hour day-of-month month day-of-week), or six with seconds last
    (`* * * * * */10`: every 10 s)."""
    time_zone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    """IANA time zone the cron fields are read in (Europe/Berlin); daylight saving is honoured."""
    concurrency_policy: Annotated[ConcurrencyPolicy, Field(strict=False)] = ConcurrencyPolicy.ALLOW
    """Allow: every run on time. Forbid: skip a run while the pool still has jobs waiting."""
    starting_deadline_seconds: Annotated[int, Field(ge=1, le=86_400)] = 300
    """A run missed (the operator down, a failover) is enqueued late while at most this old; older
    runs are skipped with an Event. Each run is enqueued once."""
    payload: dict[str, Any] = Field(default_factory=dict)
    """The job's payload, a JSON object; `$(scheduledTime)` in any string in it becomes the run's time
    (RFC 3339, UTC). It must match the input schema, as any job's payload."""


MAX_JOBS_PER_SECOND = 100_000


class RateLimit(ApiModel):
    """At most so many jobs of the type start per second, counted across every worker of every pool
    that serves the type on the same queue server, for a downstream that cannot take more."""

    jobs_per_second: Annotated[float, Field(gt=0, le=MAX_JOBS_PER_SECOND)]
    """Sustained rate, e.g. 20 or 0.5."""
    burst: Annotated[int, Field(ge=1, le=MAX_JOBS_PER_SECOND)] = 1
    """Jobs that may start at once after a quiet spell; 1 spaces every start by 1/jobsPerSecond."""


class JobTypeSpec(ApiModel):
    """What a kind of job is: its lane, payload shape, time limits, retries, and the API access it needs."""

    lane: Annotated[Lane, Field(strict=False)]
    """How long jobs run, which decides the pools that suit them and the longest timeout allowed:
    fast (seconds; timeoutSeconds at most 300), normal (minutes; at most 3600), heavy (long jobs;
    at most 86400)."""
    input: Input | None = None
    """The payload's JSON Schema; absent means payloads are not checked."""
    timeout_seconds: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_SECONDS)]
    """Longest one attempt may run before it is cancelled and counted as a timeout failure. Also
    sets the workers' terminationGracePeriodSeconds, so a draining worker can finish its job."""
    deadline_seconds: Annotated[int, Field(ge=1, le=MAX_DEADLINE_SECONDS)] | None = None
    """Age, counted from when the job was enqueued, past which it has lost its value: it expires
    and is not started. Absent means jobs never expire."""
    retry: Retry = Retry()
    """Retry policy for failed attempts."""
    dead_letter: QueueRef | None = None
    """Where jobs go that failed for good (out of attempts, or a failFastOn class); absent means
    they are dropped, after being logged and counted."""
    review: QueueRef | None = None
    """Where jobs go whose result the worker marks as ambiguous, for a person to decide, instead of
    being retried or dead-lettered."""
    idempotency: Idempotency | None = None
    """How redelivered jobs are recognised; absent means a redelivered job runs again."""
    schedule: Schedule | None = None
    """Enqueue a job of this type on a schedule (a cron expression) to every pool that serves it."""
    priority: Annotated[Priority, Field(strict=False)] = Priority.NORMAL
    """high, normal or low. Jobs wait on a queue of their level; a worker with jobs on several levels
    takes them 4:2:1 (high:normal:low) in every 7 it takes, a level's turn going to the highest level
    with jobs when it has none. normal jobs use the pool's queue itself, so queues written before
    priorities keep working unchanged."""
    rate_limit: RateLimit | None = None
    """Most jobs per second, shared through the queue server (Redis pools: that server; RabbitMQ
    pools: their idempotencyStore, else each worker process alone). Workers wait for their turn
    before the handler runs (the wait is not part of timeoutSeconds), and the autoscaler adds no
    replicas past those the rate can keep busy. Absent: no limit."""
    permissions: Annotated[list[Permission], Field(max_length=MAX_PERMISSION_RULES)] = Field(
        default_factory=list
    )
    """Kubernetes API access the workers need for this job type. The rules of all job types a pool
    serves become that pool's Role; with none, workers get no API token at all."""

    validations: ClassVar[tuple[Rule[JobTypeSpec], ...]] = (
        Rule(
            cel=f"self.timeoutSeconds <= {_LANE_CEILINGS_CEL}[self.lane]",
            message=f"timeoutSeconds is too long for the lane: at most {_LANE_CEILINGS_TEXT}",
            holds=lambda spec: spec.timeout_seconds <= LANE_TIMEOUT_CEILING_SECONDS[spec.lane],
            field_path=".timeoutSeconds",
        ),
        Rule(
            cel="!has(self.deadlineSeconds) || self.deadlineSeconds >= self.timeoutSeconds",
            message="deadlineSeconds must be at least timeoutSeconds, or no attempt could ever finish",
            holds=lambda spec: spec.deadline_seconds is None or spec.deadline_seconds >= spec.timeout_seconds,
            field_path=".deadlineSeconds",
        ),
    )


class JobTypeStatus(ApiModel):
    """What the operator last observed about a JobType."""

    observed_generation: Count | None = None
    """metadata.generation the operator last acted on."""
    conditions: Conditions = Field(default_factory=list)
    """Current state: Accepted is False, with a reason, when the job type cannot be served as
    written (for example an input schema that is not valid JSON Schema)."""
    last_schedule_time: Timestamp | None = None
    """The latest scheduled run enqueued (or skipped): each run is enqueued at most once, also across
    an operator failover."""
    next_schedule_time: Timestamp | None = None
    """When the schedule runs next."""


class JobType(ApiModel):
    """A typed kind of job that WorkerPools serve: payload shape, limits, retries, and API access."""

    api_version: Literal["workerfleet.dev/v1alpha1"] = API_VERSION
    """API version of this object."""
    kind: Literal["JobType"] = "JobType"
    """Kind of this object."""
    metadata: ObjectMeta
    """Standard object metadata."""
    spec: JobTypeSpec
    """The job type as its owner wants it."""
    status: JobTypeStatus | None = None
    """What the operator observed."""
