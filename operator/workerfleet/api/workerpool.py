"""WorkerPool: a fleet of identical workers consuming one queue, with autoscaling and canary rollouts."""

from __future__ import annotations

from enum import StrEnum
from itertools import pairwise
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field

from workerfleet.api.base import API_VERSION, ApiModel, Count, ListSet, Rule, Timestamp, first_repeated
from workerfleet.api.common import (
    MAX_PORT,
    MESSAGE_MAX_LENGTH,
    MIN_PORT,
    HostPort,
    ObjectName,
    PrometheusServer,
    QueueName,
    SecretKeySelector,
    TLSConfig,
)
from workerfleet.api.conditions import Conditions
from workerfleet.api.jobtype import FailureClass
from workerfleet.api.meta import ObjectMeta
from workerfleet.api.podtemplate import PodTemplate
from workerfleet.api.queue_kinds import KINDS, spoken_list

POOL_NAME_MAX_LENGTH = 56
"""A pool's name becomes a label value (at most 63 characters) and, suffixed "-canary", a Deployment name."""
MAX_REPLICAS = 10_000
MAX_JOB_TYPES = 32
MAX_CANARY_STEPS = 20
MAX_SCALING_POLICIES = 10
MAX_DEPTH = 1_000_000_000
REVISION_MAX_LENGTH = 63
SELECTOR_MAX_LENGTH = 4_096
QUERY_MAX_LENGTH = 4_096
ANALYSIS_HISTORY_LENGTH = 10

Replicas = Annotated[int, Field(ge=0, le=MAX_REPLICAS)]


class RedisAuth(ApiModel):
    """Credentials for Redis AUTH."""

    username_secret_ref: SecretKeySelector | None = None
    """ACL user name; absent authenticates as Redis's default user."""
    password_secret_ref: SecretKeySelector
    """Password of the user."""


class RedisList(ApiModel):
    """A Redis list: producers push jobs onto it, workers pop them off."""

    address: HostPort
    """Redis server as host:port, e.g. redis.queues:6379."""
    database: Annotated[int, Field(ge=0, le=255)] = 0
    """Logical database number (SELECT)."""
    list_key: Annotated[QueueName, Field(alias="list")]
    """Key of the list that holds waiting jobs. Queue depth counts these, the jobs the pool's workers
    hold in flight, and retries waiting for their backoff."""
    auth: RedisAuth | None = None
    """Credentials; absent connects without AUTH."""
    tls: TLSConfig | None = None
    """TLS settings; absent connects in plain text."""


class RedisStream(ApiModel):
    """A Redis stream read through a consumer group, so every job is delivered to one worker and
    acknowledged only when done."""

    address: HostPort
    """Redis server as host:port, e.g. redis.queues:6379."""
    database: Annotated[int, Field(ge=0, le=255)] = 0
    """Logical database number (SELECT)."""
    stream: QueueName
    """Key of the stream."""
    consumer_group: QueueName
    """Consumer group the workers read as; created at the start of the stream when missing, so jobs
    added before the first worker started run too. Queue depth is the group's lag plus its pending
    entries plus retries waiting for their backoff."""
    auth: RedisAuth | None = None
    """Credentials; absent connects without AUTH."""
    tls: TLSConfig | None = None
    """TLS settings; absent connects in plain text."""


class RabbitMQAuth(ApiModel):
    """Credentials of a RabbitMQ user."""

    username_secret_ref: SecretKeySelector
    """User name."""
    password_secret_ref: SecretKeySelector
    """Password."""


class IdempotencyStore(ApiModel):
    """A Redis server where the workers of a RabbitMQ pool record the idempotency keys of completed jobs,
    so a keyed job delivered again to any worker is not run again."""

    address: HostPort
    """Redis server as host:port, e.g. redis.queues:6379."""
    database: Annotated[int, Field(ge=0, le=255)] = 0
    """Logical database number (SELECT)."""
    key_prefix: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """Prefix of the keys written; absent uses `<queue>:done:`."""
    auth: RedisAuth | None = None
    """Credentials; absent connects without AUTH."""
    tls: TLSConfig | None = None
    """TLS settings; absent connects in plain text."""


class RabbitMQ(ApiModel):
    """A RabbitMQ queue the workers consume over AMQP 0-9-1, acknowledging each job when done."""

    address: HostPort
    """Broker as host:port, e.g. rabbitmq.queues:5672."""
    vhost: Annotated[str, Field(min_length=1, max_length=255)] = "/"
    """Virtual host of the queue."""
    queue: QueueName
    """Name of the queue; queue depth is its count of ready messages."""
    auth: RabbitMQAuth | None = None
    """Credentials; absent uses the broker's guest user, which RabbitMQ admits only from localhost."""
    tls: TLSConfig | None = None
    """TLS settings; absent connects in plain text."""
    idempotency_store: IdempotencyStore | None = None
    """Where completed idempotency keys are recorded, shared by all workers of the pool. Absent, each
    worker process remembers the keys it completed itself: a keyed job redelivered to another worker
    (its acknowledgement lost to a broker restart or a dead worker) runs again."""


class PrometheusQueue(PrometheusServer):
    """Queue depth read from Prometheus, for a queue workerfleet has no client for; the workers
    consume that queue with their own client, and the operator only scales on the query's value."""

    query: Annotated[str, Field(min_length=1, max_length=QUERY_MAX_LENGTH)]
    """PromQL expression whose value is the number of jobs waiting; it must return a single sample,
    e.g. sum(sqs_approximate_number_of_messages_visible{queue="thumbs"})."""


class Queue(ApiModel):
    """Where the pool's jobs wait. Set exactly one backend."""

    redis: RedisList | None = None
    """A Redis list."""
    redis_stream: RedisStream | None = None
    """A Redis stream with a consumer group."""
    rabbitmq: RabbitMQ | None = None
    """A RabbitMQ queue."""
    prometheus: PrometheusQueue | None = None
    """Any queue whose depth Prometheus knows."""

    validations: ClassVar[tuple[Rule[Queue], ...]] = (
        Rule(
            cel=" + ".join(f"(has(self.{kind.name}) ? 1 : 0)" for kind in KINDS) + " == 1",
            message=f"set exactly one queue backend: {spoken_list([kind.name for kind in KINDS])}",
            holds=lambda queue: sum(getattr(queue, kind.field) is not None for kind in KINDS) == 1,
        ),
    )


class AutoscalingEngine(StrEnum):
    """Which component turns queue depth into replicas."""

    BUILTIN = "builtin"
    KEDA = "keda"


class ScalingPolicyType(StrEnum):
    """Unit of a scaling policy's value."""

    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    """Which of several policies wins."""

    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


class ScalingPolicy(ApiModel):
    """A limit on how much the replica count may change within a period."""

    type: Annotated[ScalingPolicyType, Field(strict=False)]
    """Pods: value is a number of replicas; Percent: value is a percentage of the current replicas."""
    value: Annotated[int, Field(ge=1, le=MAX_REPLICAS)]
    """Largest change allowed within periodSeconds."""
    period_seconds: Annotated[int, Field(ge=1, le=1_800)]
    """Window the policy looks back over."""


class ScalingRules(ApiModel):
    """How fast the HPA may scale in one direction (autoscaling/v2 HPAScalingRules)."""

    stabilization_window_seconds: Annotated[int, Field(ge=0, le=3_600)] | None = None
    """Past recommendations considered, so replicas do not flap; absent uses the HPA's default
    (0 for scaling up, 300 for scaling down)."""
    select_policy: Annotated[SelectPolicy, Field(strict=False)] | None = None
    """Which policy applies when several do: Max (the largest change, the HPA's default), Min, or
    Disabled (never scale in this direction)."""
    policies: Annotated[list[ScalingPolicy], Field(min_length=1, max_length=MAX_SCALING_POLICIES)] | None = (
        None
    )
    """Limits on the rate of change; absent uses the HPA's defaults."""


class ScalingBehavior(ApiModel):
    """Rate limits for scaling, passed to the HorizontalPodAutoscaler's behavior as written."""

    scale_up: ScalingRules | None = None
    """Rules for adding replicas."""
    scale_down: ScalingRules | None = None
    """Rules for removing replicas."""


class Fallback(ApiModel):
    """Replicas to run while queue depth cannot be read, instead of scaling on stale numbers."""

    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive failed depth reads after which the fallback replicas apply."""
    replicas: Replicas
    """Replica count while in fallback; must lie between minReplicas and maxReplicas."""


class Autoscaling(ApiModel):
    """Scale on queue depth: an HPA targets the pool's scale subresource with depth as an external
    metric; the operator itself handles activation from and to zero."""

    engine: Annotated[AutoscalingEngine, Field(strict=False)] = AutoscalingEngine.BUILTIN
    """builtin: the operator's metrics adapter serves queue depth to an HPA it creates; keda: the
    operator creates a KEDA ScaledObject instead, for clusters whose external metrics API is KEDA's."""
    min_replicas: Replicas = 1
    """Fewest replicas. 0 allows scaling to zero when the queue stays at or below activationDepth."""
    max_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)]
    """Most replicas."""
    target_depth_per_replica: Annotated[int, Field(ge=1, le=MAX_DEPTH)]
    """Waiting jobs per replica the autoscaler aims for: depth 200 with 20 per replica asks for 10."""
    activation_depth: Annotated[int, Field(ge=0, le=MAX_DEPTH)] = 0
    """Depth above which a pool at zero replicas wakes up (to one replica, then the HPA takes
    over); only matters when minReplicas is 0."""
    polling_interval_seconds: Annotated[int, Field(ge=1, le=3_600)] = 10
    """How often queue depth is read."""
    cooldown_seconds: Annotated[int, Field(ge=0, le=86_400)] = 300
    """How long depth must stay at or below activationDepth before the pool scales to zero."""
    behavior: ScalingBehavior | None = None
    """Scaling rate limits for the HPA; absent uses the HPA's defaults."""
    fallback: Fallback | None = None
    """Replicas to run while depth cannot be read; absent keeps the current replica count."""

    validations: ClassVar[tuple[Rule[Autoscaling], ...]] = (
        Rule(
            cel="self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            holds=lambda scaling: scaling.min_replicas <= scaling.max_replicas,
            field_path=".minReplicas",
        ),
        Rule(
            cel="!has(self.fallback)"
            " || (self.minReplicas <= self.fallback.replicas && self.fallback.replicas <= self.maxReplicas)",
            message="fallback.replicas must lie between minReplicas and maxReplicas",
            holds=lambda scaling: (
                scaling.fallback is None
                or scaling.min_replicas <= scaling.fallback.replicas <= scaling.max_replicas
            ),
            field_path=".fallback.replicas",
        ),
    )


class CanaryStep(ApiModel):
    """One stage of a canary rollout: run the new revision on weight percent of the replicas."""

    weight: Annotated[int, Field(ge=1, le=100)]
    """Percentage of the pool's replicas that run the new revision. All replicas pull from the same
    queue, so this is also the canary's share of the jobs."""
    pause_seconds: Annotated[int, Field(ge=0, le=86_400)] | None = None
    """How long to hold this weight, with analysis running, before the next step; absent holds
    until `kubectl workerfleet promote`."""


class NoDataPolicy(StrEnum):
    """What an analysis does when it has too few samples to judge."""

    PAUSE = "Pause"
    FAIL = "Fail"
    CONTINUE = "Continue"


class Analysis(ApiModel):
    """Compare the canary with the stable revision on the same queue; a failing verdict rolls back."""

    interval_seconds: Annotated[int, Field(ge=1, le=3_600)] = 30
    """How often a verdict is taken. Each verdict counts the jobs since the step started, over a
    window of at least two scrapeIntervalSeconds."""
    scrape_interval_seconds: Annotated[int, Field(ge=1, le=3_600)] = 60
    """How often Prometheus scrapes the workers. A rate needs two samples, so the query window is
    never shorter than twice this: a shorter one is always empty."""
    max_error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    """Highest share of the canary's jobs that may fail, e.g. 0.02 for 2%."""
    max_increase_over_stable: Annotated[float, Field(ge=0, le=1)] | None = None
    """Largest amount by which the canary's error rate may exceed the stable revision's over the
    same interval, e.g. 0.01 for one percentage point."""
    min_samples: Annotated[int, Field(ge=1, le=MAX_DEPTH)] = 100
    """Jobs the canary must have finished before any verdict, so a few failures cannot roll back a
    good revision."""
    failure_limit: Annotated[int, Field(ge=0, le=100)] = 0
    """Failing verdicts tolerated over the whole rollout; the next one rolls back."""
    on_no_data: Annotated[NoDataPolicy, Field(strict=False)] = NoDataPolicy.PAUSE
    """What to do when an interval ends with fewer than minSamples or no metrics (Prometheus
    unreachable too, within consecutiveErrorLimit): Pause (hold the step until data arrives or
    someone promotes or aborts), Fail (count a failing verdict) or Continue (treat it as passing)."""
    no_samples_limit: Annotated[int, Field(ge=1, le=100)] = 3
    """Analyses in a row in which the canary finished no job while the stable revision finished at
    least minSamples; at this many the rollout rolls back as CanaryUnhealthy: a canary that crashes
    or hangs does no work, and waiting for its data would wait forever."""
    restart_limit: Annotated[int, Field(ge=1, le=100)] = 3
    """Restarts of canary workers within an analysis window at which the rollout rolls back as
    CanaryUnhealthy: a canary that crash-loops or is OOM-killed between jobs may still finish jobs
    and be ready most of the time. Counted from the worker runtime's
    `workerfleet_worker_start_time_seconds`; workers without the runtime are not judged on it."""
    consecutive_error_limit: Annotated[int, Field(ge=0, le=100)] = 4
    """Analyses in a row that may fail to reach Prometheus (or get an unusable answer); the next one
    rolls back, so a rollout never advances blind for long."""
    prometheus: PrometheusServer
    """Prometheus that scrapes the pool's workers; the analysis reads the job outcome counters the
    worker runtime exports."""
    error_query: Annotated[str, Field(min_length=1, max_length=QUERY_MAX_LENGTH)] | None = None
    """PromQL for the failed attempts of one revision over the window; `$pool`, `$revision`,
    `$namespace` and `$window` (e.g. 30s) are filled in. Absent counts the worker runtime's
    retried, dead_lettered and failed outcomes of `workerfleet_jobs_total`."""
    total_query: Annotated[str, Field(min_length=1, max_length=QUERY_MAX_LENGTH)] | None = None
    """PromQL for all finished attempts of one revision over the window, with the same placeholders.
    Absent counts every outcome of `workerfleet_jobs_total` except duplicate."""

    validations: ClassVar[tuple[Rule[Analysis], ...]] = (
        Rule(
            cel="has(self.maxErrorRate) || has(self.maxIncreaseOverStable)",
            message="set maxErrorRate, maxIncreaseOverStable or both: an analysis needs a threshold",
            holds=lambda analysis: (
                analysis.max_error_rate is not None or analysis.max_increase_over_stable is not None
            ),
        ),
    )


def _strictly_increasing(weights: list[int]) -> bool:
    return all(earlier < later for earlier, later in pairwise(weights))


class Canary(ApiModel):
    """Shift replicas to a new revision step by step; roll back by itself when the analysis fails."""

    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=MAX_CANARY_STEPS)]
    """Weights to go through, in order; after the last step the new revision becomes stable."""
    analysis: Analysis | None = None
    """Automatic verdicts; absent means the steps advance on time (or promotion) alone."""
    progress_deadline_seconds: Annotated[int, Field(ge=10, le=86_400)] = 600
    """How long a step may wait for its canary workers to be ready (its clock starts only then)
    before the rollout fails and rolls back: an image that cannot be pulled, pods that cannot be
    scheduled or never pass their readiness probe."""

    validations: ClassVar[tuple[Rule[Canary], ...]] = (
        Rule(
            cel="self.steps.map(s, s.weight).isSorted()"
            " && self.steps.all(a, self.steps.exists_one(b, b.weight == a.weight))",
            message="step weights must increase strictly from each step to the next",
            holds=lambda canary: _strictly_increasing([step.weight for step in canary.steps]),
            field_path=".steps",
        ),
    )


class BreakerOutcome(StrEnum):
    """Outcomes of `workerfleet_jobs_total` a circuit breaker may count as failures."""

    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    FAILED = "failed"
    EXPIRED = "expired"
    REVIEW = "review"


DEFAULT_BREAKER_FAILURES = (BreakerOutcome.RETRIED, BreakerOutcome.DEAD_LETTERED, BreakerOutcome.FAILED)


FailureRatio = Annotated[float, Field(gt=0, le=1)]
BreakerSamples = Annotated[int, Field(ge=1, le=MAX_DEPTH)]


class BreakerFailureClass(ApiModel):
    """The breaker's thresholds for the failures of one failure class (the class the worker runtime
    gives a failed attempt, as in a JobType's retry.retryOn)."""

    failure_class: Annotated[FailureClass, Field(alias="class", strict=False)]
    """transient, timeout, validation, policy or unknown."""
    max_failure_ratio: FailureRatio | None = None
    """Share of finished jobs that failed with this class at which the breaker opens; default the
    breaker's maxFailureRatio."""
    min_samples: BreakerSamples | None = None
    """Jobs that must have finished within the window before this class's verdict; default the
    breaker's minSamples."""
    trips: bool = True
    """false: failures of this class never open the breaker (a flood of invalid payloads says nothing
    about the downstream); they still count as jobs finished."""

    validations: ClassVar[tuple[Rule[BreakerFailureClass], ...]] = (
        Rule(
            cel="!has(self.trips) || self.trips || (!has(self.maxFailureRatio) && !has(self.minSamples))",
            message="a failure class with trips false takes no maxFailureRatio or minSamples:"
            " remove them, or set trips true",
            holds=lambda entry: (
                entry.trips or (entry.max_failure_ratio is None and entry.min_samples is None)
            ),
            field_path=".trips",
        ),
    )


def _one_entry_per_class(entries: list[BreakerFailureClass]) -> list[BreakerFailureClass]:
    classes = [entry.failure_class for entry in entries]
    repeated = first_repeated(classes)
    if repeated is not None:
        raise ValueError(f"failureClasses names class {repeated} twice: keep one entry per class")
    return entries


class CircuitBreaker(ApiModel):
    """Stop the whole pool taking jobs while too many of them fail, and probe before resuming.

    The operator reads the outcome counters of every ready worker from its metrics port (no Prometheus
    needed) every windowSeconds/5 (2-10 s). Closed: the failure ratio over the window reaches
    maxFailureRatio with at least minSamples jobs, so it opens. Each class listed in failureClasses
    is judged on its own (its failures over all jobs finished, against its own thresholds); the
    failures of every other class, and those without one, are judged together against maxFailureRatio
    and minSamples. Open: workers take no new jobs (they finish the ones they hold; nothing is
    dead-lettered for it) for coolDownSeconds, then it is half-open: each worker takes up to probeJobs
    jobs, and once probeJobs outcomes are in, every ratio below its maximum closes it, else it opens
    again."""

    max_failure_ratio: FailureRatio
    """Share of finished jobs that failed at which the breaker opens, e.g. 0.5: failures of the
    classes not listed in failureClasses, together."""
    min_samples: BreakerSamples = 20
    """Jobs that must have finished within the window before any verdict."""
    failure_classes: Annotated[
        list[BreakerFailureClass],
        AfterValidator(_one_entry_per_class),
        Field(
            max_length=len(FailureClass),
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["class"]},
        ),
    ] = Field(default_factory=list)
    """Thresholds of their own for some failure classes, e.g. `[{class: transient, maxFailureRatio:
    0.2}, {class: validation, trips: false}]`; one entry per class."""
    window_seconds: Annotated[int, Field(ge=10, le=3_600)] = 60
    """How far back the ratio looks."""
    failure_outcomes: Annotated[
        ListSet[Annotated[BreakerOutcome, Field(strict=False)]],
        Field(min_length=1, max_length=len(BreakerOutcome)),
    ] = Field(default_factory=lambda: list(DEFAULT_BREAKER_FAILURES))
    """Which outcomes count as failures: retried, dead_lettered, failed (the default, what canary
    analysis counts), expired, review. Every outcome but duplicate is a sample."""
    cool_down_seconds: Annotated[int, Field(ge=1, le=86_400)] = 60
    """How long the breaker stays open before it probes."""
    probe_jobs: Annotated[int, Field(ge=1, le=1_000)] = 5
    """Jobs each worker may take while half-open; also the outcomes the probe's verdict waits for."""


class WorkerRuntime(StrEnum):
    """What runs in the worker containers."""

    WORKERFLEET = "workerfleet"
    NONE = "none"


class Worker(ApiModel):
    """How the operator talks to the worker process in the pod."""

    runtime: Annotated[WorkerRuntime, Field(strict=False)] = WorkerRuntime.WORKERFLEET
    """`workerfleet`: the first container runs `workerfleet worker`, which serves /metrics, /healthz
    and /readyz on `port`; the pods get that port (named `metrics`) and liveness and readiness
    probes against it. `none`: the image runs something else; no port and no probes are added."""
    port: Annotated[int, Field(ge=MIN_PORT, le=MAX_PORT)] = 8000
    """The worker runtime's port for metrics and probes (WORKERFLEET_METRICS_PORT in the pod)."""
    spare_busy_workers: bool = True
    """Before replicas are removed (by the HPA, a manual scale or a rollout), set each worker pod's
    `controller.kubernetes.io/pod-deletion-cost` to the jobs it holds, read from its metrics port,
    so the ReplicaSet removes idle workers first. Only with runtime `workerfleet`."""


class Rollout(ApiModel):
    """How a change of the pod template reaches the workers."""

    canary: Canary
    """Canary rollout in steps, with automatic rollback."""


_KEDA_CEL = "has(self.autoscaling) && has(self.autoscaling.engine) && self.autoscaling.engine == 'keda'"


class WorkerPoolSpec(ApiModel):
    """The pool as its owner wants it."""

    job_types: Annotated[ListSet[ObjectName], Field(min_length=1, max_length=MAX_JOB_TYPES)]
    """Names of the JobTypes (same namespace) the workers serve; their permissions make up the
    pool's Role, and the longest timeoutSeconds sets the pods' termination grace period."""
    replicas: Replicas = 1
    """Number of workers. Owned by the HorizontalPodAutoscaler when autoscaling is set, so leave it
    out of the manifests of autoscaled pools: `kubectl apply` would reset it each time. During a
    canary rollout it is the total of stable and canary workers."""
    paused: bool = False
    """Hold rollouts: a running canary stays at its step and template changes wait. Scaling goes on."""
    template: PodTemplate
    """Pod template of the workers (image, command, env, resources, ...), as in a Deployment."""
    queue: Queue
    """Where the jobs wait."""
    autoscaling: Autoscaling | None = None
    """Queue-depth autoscaling; absent keeps replicas as set."""
    rollout: Rollout | None = None
    """Rollout strategy; absent replaces workers with a plain rolling update."""
    worker: Worker = Field(default_factory=Worker)
    """The worker runtime in the pods: its port, probes, or none."""
    circuit_breaker: CircuitBreaker | None = None
    """Stop taking jobs while too many fail; absent never stops. Needs worker.runtime `workerfleet`."""

    validations: ClassVar[tuple[Rule[WorkerPoolSpec], ...]] = (
        Rule(
            cel="!has(self.circuitBreaker) || !has(self.worker) || !has(self.worker.runtime)"
            " || self.worker.runtime == 'workerfleet'",
            message="circuitBreaker needs worker.runtime workerfleet: the breaker reads the runtime's"
            " outcome counters and the runtime stops taking jobs while it is open."
            " Remove circuitBreaker or the runtime",
            holds=lambda spec: (
                spec.circuit_breaker is None or spec.worker.runtime == WorkerRuntime.WORKERFLEET
            ),
            field_path=".circuitBreaker",
        ),
        Rule(
            cel=f"!({_KEDA_CEL}) || !("
            + " || ".join(
                f"(has(self.queue.{backend}) && has(self.queue.{backend}.tls)"
                f" && has(self.queue.{backend}.tls.serverName))"
                for backend in (kind.name for kind in KINDS)
            )
            + ")",
            message="tls.serverName is not supported with autoscaling.engine keda: KEDA checks the"
            " certificate against the address's host. Use the builtin engine, or a certificate for that host",
            holds=lambda spec: (
                not _keda(spec) or all(tls is None or tls.server_name is None for tls in _tls(spec))
            ),
            field_path=".queue",
        ),
        Rule(
            cel=f"!({_KEDA_CEL}) || !("
            + " || ".join(
                f"(has(self.queue.{backend}) && has(self.queue.{backend}.tls)"
                f" && has(self.queue.{backend}.tls.caSecretRef))"
                for backend in (kind.name for kind in KINDS if not kind.keda_takes_ca)
            )
            + ")",
            message=f"tls.caSecretRef of a {spoken_list([k.product for k in KINDS if not k.keda_takes_ca])}"
            " queue is not supported with autoscaling.engine keda: KEDA cannot be given that CA."
            " Use the builtin engine, or a certificate the system's authorities trust",
            holds=lambda spec: (
                not _keda(spec)
                or all(
                    backend is None or backend.tls is None or backend.tls.ca_secret_ref is None
                    for backend in (
                        getattr(spec.queue, kind.field) for kind in KINDS if not kind.keda_takes_ca
                    )
                )
            ),
            field_path=".queue",
        ),
    )


def _keda(spec: WorkerPoolSpec) -> bool:
    return spec.autoscaling is not None and spec.autoscaling.engine == AutoscalingEngine.KEDA


def _tls(spec: WorkerPoolSpec) -> list[TLSConfig | None]:
    backends = (getattr(spec.queue, kind.field) for kind in KINDS)
    return [backend.tls for backend in backends if backend]


class RolloutPhase(StrEnum):
    """Where a pool's rollout stands."""

    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    DEGRADED = "Degraded"


class Verdict(StrEnum):
    """Outcome of one analysis interval."""

    PASSED = "Pass"
    FAILED = "Fail"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class AnalysisResult(ApiModel):
    """The most recent analysis verdict and the numbers behind it."""

    time: Timestamp
    """When the verdict was taken."""
    verdict: Annotated[Verdict, Field(strict=False)]
    """Pass, Fail, Inconclusive (too few samples or no metrics), or Error (Prometheus unreachable)."""
    canary_samples: Count = 0
    """Jobs the canary finished in the interval."""
    stable_samples: Count = 0
    """Jobs the stable revision finished in the interval."""
    canary_error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    """Share of the canary's jobs that failed; absent without samples."""
    stable_error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    """Share of the stable revision's jobs that failed; absent without samples."""
    message: Annotated[str, Field(max_length=MESSAGE_MAX_LENGTH)] = ""
    """Why the verdict is what it is, for people."""


class RolloutStatus(ApiModel):
    """Progress of the current rollout; kept in status so a restarted operator resumes where it was."""

    phase: Annotated[RolloutPhase, Field(strict=False)]
    """Healthy (no rollout running), Progressing, Paused (held by spec.paused, a step without
    pauseSeconds, or missing analysis data), Promoting (the new revision is stable and its workers
    start; the canary's go as they get ready), or Degraded (rolled back after a failing analysis, or
    canary workers not ready within progressDeadlineSeconds)."""
    step: Annotated[int, Field(ge=0, le=MAX_CANARY_STEPS)] = 0
    """Canary step being run, counting from 1; 0 when no step has started."""
    weight: Annotated[int, Field(ge=0, le=100)] = 0
    """Percentage of replicas running the canary revision."""
    step_started_at: Timestamp | None = None
    """When the current step's canary workers were ready; pauseSeconds and analyses count from here."""
    waiting_since: Timestamp | None = None
    """When the current step began waiting for its canary workers to be ready (or, after its clock
    started, when they stopped being ready); unset once they are. The rollout fails when they are
    not ready within progressDeadlineSeconds."""
    failed_analyses: Annotated[int, Field(ge=0, le=1_000)] = 0
    """Failing verdicts so far in this rollout, compared with failureLimit."""
    silent_analyses: Annotated[int, Field(ge=0, le=1_000)] = 0
    """Analyses in a row in which the canary finished no job while stable did, compared with
    noSamplesLimit."""
    consecutive_errors: Annotated[int, Field(ge=0, le=1_000)] = 0
    """Analyses in a row that could not read Prometheus, compared with consecutiveErrorLimit."""
    paused_at: Timestamp | None = None
    """When spec.paused began holding the rollout; on resume the step's clock moves on by the pause,
    so paused time does not count towards pauseSeconds."""
    handled_action: Annotated[str, Field(max_length=MESSAGE_MAX_LENGTH)] | None = None
    """The last `workerfleet.dev/rollout-action` annotation acted on or dropped, so an action is
    looked at once."""
    message: Annotated[str, Field(max_length=MESSAGE_MAX_LENGTH)] = ""
    """What the rollout is doing or waiting for, for people."""
    last_analysis: AnalysisResult | None = None
    """The most recent analysis verdict."""
    history: Annotated[list[AnalysisResult], Field(max_length=ANALYSIS_HISTORY_LENGTH)] = Field(
        default_factory=list
    )
    """The latest analysis verdicts of this rollout, oldest first."""


class BreakerState(StrEnum):
    """Where a pool's circuit breaker stands."""

    CLOSED = "Closed"
    OPEN = "Open"
    HALF_OPEN = "HalfOpen"


class CircuitBreakerStatus(ApiModel):
    """The breaker's state; kept in status so a restarted operator keeps it open or probing."""

    state: Annotated[BreakerState, Field(strict=False)] = BreakerState.CLOSED
    """Closed (jobs flow), Open (workers take no new jobs) or HalfOpen (each worker takes probeJobs)."""
    since: Timestamp | None = None
    """When the breaker entered this state; the cool-down and the probe count from here."""
    held: bool = False
    """Opened by `kubectl workerfleet breaker open`: stays open until reset, with no probe."""
    failure_ratio: Annotated[float, Field(ge=0, le=1)] | None = None
    """Failed share of the jobs in the last verdict's window (or probe)."""
    samples: Count = 0
    """Jobs finished in that window."""
    failure_class: Annotated[FailureClass, Field(strict=False)] | None = None
    """The failure class failureRatio counts, when it has thresholds of its own (spec's
    failureClasses); absent, failureRatio counts the failures of every other class together."""
    handled_action: Annotated[str, Field(max_length=MESSAGE_MAX_LENGTH)] | None = None
    """The last `workerfleet.dev/breaker-action` annotation acted on, so an action is taken once."""


class QueueStatus(ApiModel):
    """The queue as last read."""

    depth: Count | None = None
    """Jobs waiting at the last successful read. The age of the oldest job and the time of the last
    read change at every poll, so they are metrics (workerfleet_queue_oldest_age_seconds,
    workerfleet_queue_last_poll_timestamp_seconds), not status."""
    consecutive_failures: Count = 0
    """Failed reads since the last successful one; compared with fallback.failureThreshold."""
    review_depth: Count | None = None
    """Jobs waiting for a person in the review queues of the pool's JobTypes, at the last read
    (`kubectl workerfleet review ls`)."""
    dead_letter_depth: Count | None = None
    """Jobs in the pool's dead-letter queues (its JobTypes' and `<queue>.dlq`), at the last read
    (`kubectl workerfleet dlq ls`)."""


class WorkerPoolConditionType(StrEnum):
    """Conditions a WorkerPool reports."""

    READY = "Ready"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    QUEUE_REACHABLE = "QueueReachable"
    SCALING_ACTIVE = "ScalingActive"
    FALLBACK = "Fallback"
    CIRCUIT_OPEN = "CircuitOpen"


class WorkerPoolStatus(ApiModel):
    """What the operator last observed and did."""

    observed_generation: Count | None = None
    """metadata.generation the operator last acted on."""
    replicas: Replicas | None = None
    """Worker pods that exist, stable and canary together (read by the scale subresource)."""
    ready_replicas: Replicas | None = None
    """Worker pods that are ready."""
    available_replicas: Replicas | None = None
    """Worker pods ready for at least the Deployments' minReadySeconds."""
    canary_replicas: Replicas | None = None
    """Worker pods running the canary revision."""
    selector: Annotated[str, Field(max_length=SELECTOR_MAX_LENGTH)] | None = None
    """Label selector of all the pool's pods, in string form; the HPA reads it through the scale
    subresource."""
    stable_revision: Annotated[str, Field(max_length=REVISION_MAX_LENGTH)] | None = None
    """Hash of the pod template the stable workers run."""
    canary_revision: Annotated[str, Field(max_length=REVISION_MAX_LENGTH)] | None = None
    """Hash of the pod template the canary workers run; absent when no rollout is running."""
    rollout: RolloutStatus | None = None
    """Progress of the current or last rollout."""
    queue: QueueStatus | None = None
    """The queue as last read."""
    circuit_breaker: CircuitBreakerStatus | None = None
    """The circuit breaker's state; absent until the pool has one."""
    conditions: Conditions = Field(default_factory=list)
    """Current state, one entry per type: Ready (the pool serves its queue as specified), Available
    (at least one worker is ready), Progressing (a rollout is running), Degraded (a rollout was
    rolled back or children cannot be created), QueueReachable (the last depth read succeeded),
    ScalingActive (the autoscaler can act), Fallback (fallback replicas are in force) and CircuitOpen
    (the circuit breaker keeps workers from taking jobs, with the measured failure ratio)."""


class WorkerPoolMeta(ObjectMeta):
    """Object metadata of a WorkerPool, whose name is also used in labels and child object names."""

    name: Annotated[str, Field(min_length=1, max_length=POOL_NAME_MAX_LENGTH)] | None = None
    """Name of the pool, unique in its namespace."""


class WorkerPool(ApiModel):
    """A fleet of identical workers consuming one queue, with queue-depth autoscaling and canary rollouts."""

    api_version: Literal["workerfleet.dev/v1alpha1"] = API_VERSION
    """API version of this object."""
    kind: Literal["WorkerPool"] = "WorkerPool"
    """Kind of this object."""
    metadata: WorkerPoolMeta
    """Standard object metadata."""
    spec: WorkerPoolSpec
    """The pool as its owner wants it."""
    status: WorkerPoolStatus | None = None
    """What the operator observed."""
