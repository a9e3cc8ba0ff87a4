"""The worker's configuration, read from what the operator puts into every worker container.

Environment (set by the operator's Deployment; the last four only when configured):

    WORKERFLEET_POOL          the WorkerPool's name (a label on every metric)
    WORKERFLEET_REVISION      the pod template revision, stable or canary (a label on every metric)
    WORKERFLEET_QUEUE         the WorkerPool's .spec.queue as JSON, e.g. {"redis": {"address": ...}}
    WORKERFLEET_POLICIES      path of the policy file (default /etc/workerfleet/policies.json)
    WORKERFLEET_QUEUE_USERNAME  from .spec.queue.<backend>.auth.usernameSecretRef
    WORKERFLEET_QUEUE_PASSWORD  from .spec.queue.<backend>.auth.passwordSecretRef
    WORKERFLEET_QUEUE_CA        from .spec.queue.<backend>.tls.caSecretRef: the PEM bundle of CAs the
                                queue server's certificate is verified against (with tls.serverName)
    WORKERFLEET_STORE_USERNAME / _PASSWORD / _CA  the same, for .spec.queue.rabbitmq.idempotencyStore
    WORKERFLEET_DRAIN_SECONDS   how long a SIGTERM'd worker may finish in-flight jobs (default: the
                                longest timeoutSeconds of its job types); keep it below the pod's
                                terminationGracePeriodSeconds

Tuning, with defaults that suit a pod (the image or the pod template may set them):

    WORKERFLEET_HANDLERS        comma-separated modules to import; they register handlers
    WORKERFLEET_CONCURRENCY     jobs one process runs at once (default 1)
    WORKERFLEET_METRICS_ADDRESS / WORKERFLEET_METRICS_PORT   /metrics, /healthz and /readyz (default
                                0.0.0.0:8000; the operator sets the port from .spec.worker.port)
    WORKERFLEET_STALL_SECONDS   how long the consume loop may stand still before /healthz fails
                                (default 60)
    WORKERFLEET_HEARTBEAT_SECONDS  how soon a vanished worker's jobs are taken over (default 15)
    WORKERFLEET_WORKER_ID       this process's name on the queue (default <hostname>-<pid>)
    WORKERFLEET_LOG_LEVEL       DEBUG, INFO (default), WARNING, ERROR
    WORKERFLEET_MAX_MESSAGE_BYTES  the longest message the worker parses (default 1048576, 1 MiB); a
                                longer one is dead-lettered as MessageTooLarge, its first bytes kept
    WORKERFLEET_MAX_NESTING_DEPTH  how deep a message may nest arrays and objects (default 64, at most
                                128); a deeper one is dead-lettered as NestingTooDeep

The policy file is a ConfigMap the operator mounts: {"jobTypes": {"<name>": <JobType .spec as in the
CRD, camelCase>}}. Credentials are read from the environment only and never logged or echoed.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.worker_contract import POLICIES_PATH, WorkerEnv
from workerfleet.api.workerpool import Queue
from workerfleet.worker.envelope import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_NESTING_DEPTH,
    ENVELOPE_DEPTH,
    MessageLimits,
)

DEFAULT_POLICIES_PATH = Path(POLICIES_PATH)
DEFAULT_METRICS_ADDRESS = "0.0.0.0"  # noqa: S104  (Prometheus scrapes the pod's IP)
DEFAULT_METRICS_PORT = 8000
DEFAULT_HEARTBEAT_SECONDS = 15.0
DEFAULT_STALL_SECONDS = 60.0
MAX_CONCURRENCY = 1_000
MIN_MESSAGE_BYTES = 1024
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
"""Redis's own limit on a value."""
MAX_NESTING_DEPTH = 128
"""Below the JSON parser's own recursion limit (200), so the worker's bound is the one that applies."""


class ConfigurationError(ValueError):
    """The worker cannot start as configured; the message names the setting."""


@dataclass(frozen=True)
class WorkerSettings:
    pool: str
    revision: str
    worker_id: str
    queue: Queue
    credentials: Credentials
    policies_path: Path
    store_credentials: Credentials = field(default_factory=Credentials)
    """For a RabbitMQ pool's idempotencyStore."""
    handler_modules: tuple[str, ...] = ()
    concurrency: int = 1
    drain_seconds: float | None = None
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    metrics_port: int = DEFAULT_METRICS_PORT
    stall_seconds: float = DEFAULT_STALL_SECONDS
    log_level: str = "INFO"
    limits: MessageLimits = field(default_factory=MessageLimits)
    """Bounds on the messages the worker parses."""


def _number(env: Mapping[str, str], name: str, default: float, *, low: float, high: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {text!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(
            f"{name} must lie between {_shown(low)} and {_shown(high)}, not {_shown(value)}"
        )
    return value


def _shown(value: float) -> str:
    """A number as written: whole ones in full (536870912, not 5.36871e+08)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _integer(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    value = _number(env, name, default, low=low, high=high)
    if value != int(value):
        raise ConfigurationError(f"{name} must be a whole number, not {value:g}")
    return int(value)


def parse_queue(text: str) -> Queue:
    """The WorkerPool's .spec.queue from its JSON text, checked by the API model."""
    try:
        return Queue.model_validate(json.loads(text))
    except (ValueError, ValidationError) as error:
        raise ConfigurationError(
            f"WORKERFLEET_QUEUE is not a valid WorkerPool .spec.queue: {error}"
        ) from None


def settings_from_env(env: Mapping[str, str]) -> WorkerSettings:
    """Settings from environment variables (a mapping, so tests need not touch os.environ)."""
    missing = [name for name in (WorkerEnv.POOL, WorkerEnv.QUEUE) if not env.get(name)]
    if missing:
        raise ConfigurationError(f"missing environment: {', '.join(missing)}")
    queue = parse_queue(env[WorkerEnv.QUEUE])
    credentials = Credentials(
        username=env.get(WorkerEnv.QUEUE_USERNAME) or None,
        password=env.get(WorkerEnv.QUEUE_PASSWORD) or None,
        ca_pem=env.get(WorkerEnv.QUEUE_CA) or None,
    )
    drain = env.get(WorkerEnv.DRAIN_SECONDS, "").strip()
    log_level = env.get(WorkerEnv.LOG_LEVEL, "INFO").strip().upper() or "INFO"
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigurationError(
            f"WORKERFLEET_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}"
        )
    return WorkerSettings(
        pool=env[WorkerEnv.POOL],
        revision=env.get(WorkerEnv.REVISION, ""),
        worker_id=env.get(WorkerEnv.WORKER_ID) or f"{socket.gethostname()}-{os.getpid()}",
        queue=queue,
        credentials=credentials,
        store_credentials=Credentials(
            username=env.get(WorkerEnv.STORE_USERNAME) or None,
            password=env.get(WorkerEnv.STORE_PASSWORD) or None,
            ca_pem=env.get(WorkerEnv.STORE_CA) or None,
        ),
        policies_path=Path(env.get(WorkerEnv.POLICIES) or DEFAULT_POLICIES_PATH),
        handler_modules=tuple(
            module.strip() for module in env.get(WorkerEnv.HANDLERS, "").split(",") if module.strip()
        ),
        concurrency=_integer(env, WorkerEnv.CONCURRENCY, 1, low=1, high=MAX_CONCURRENCY),
        drain_seconds=(_number(env, WorkerEnv.DRAIN_SECONDS, 0.0, low=0.0, high=86_400.0) if drain else None),
        heartbeat_seconds=_number(
            env, WorkerEnv.HEARTBEAT_SECONDS, DEFAULT_HEARTBEAT_SECONDS, low=0.5, high=3_600.0
        ),
        metrics_address=env.get(WorkerEnv.METRICS_ADDRESS) or DEFAULT_METRICS_ADDRESS,
        metrics_port=_integer(env, WorkerEnv.METRICS_PORT, DEFAULT_METRICS_PORT, low=0, high=65_535),
        stall_seconds=_number(env, WorkerEnv.STALL_SECONDS, DEFAULT_STALL_SECONDS, low=1.0, high=86_400.0),
        log_level=log_level,
        limits=MessageLimits(
            max_bytes=_integer(
                env,
                WorkerEnv.MAX_MESSAGE_BYTES,
                DEFAULT_MAX_MESSAGE_BYTES,
                low=MIN_MESSAGE_BYTES,
                high=MAX_MESSAGE_BYTES,
            ),
            max_depth=_integer(
                env,
                WorkerEnv.MAX_NESTING_DEPTH,
                DEFAULT_MAX_NESTING_DEPTH,
                low=ENVELOPE_DEPTH,
                high=MAX_NESTING_DEPTH,
            ),
        ),
    )


def parse_policies(text: str) -> dict[str, JobTypeSpec]:
    """The policy file's job types, each parsed by the JobType API model exactly as the CRD has it."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ConfigurationError(f"the policy file is not JSON: {error}") from None
    job_types = document.get("jobTypes") if isinstance(document, dict) else None
    if not isinstance(job_types, dict):
        raise ConfigurationError('the policy file must be an object with "jobTypes": {name: JobType spec}')
    policies: dict[str, JobTypeSpec] = {}
    for name, spec in job_types.items():
        try:
            policies[name] = JobTypeSpec.model_validate(spec)
        except ValidationError as error:
            raise ConfigurationError(f"job type {name!r} in the policy file: {error}") from None
    return policies


def load_policies(path: Path) -> dict[str, JobTypeSpec]:
    try:
        return parse_policies(path.read_text())
    except OSError as error:
        raise ConfigurationError(f"cannot read the policy file {path}: {error.strerror}") from None


def effective_drain_seconds(settings: WorkerSettings, policies: Mapping[str, JobTypeSpec]) -> float:
    """Drain time: as configured, else long enough for the slowest job type's attempt."""
    if settings.drain_seconds is not None:
        return settings.drain_seconds
    return float(max((spec.timeout_seconds for spec in policies.values()), default=30))
