"""Put jobs on a WorkerPool's queue the way its workers read them, checked against the JobType first.

    from workerfleet import producer

    target = producer.from_cluster("media", pool="thumbs", job_type="resize-image")
    # or: producer.from_files("pool.yaml", ["jobtype.yaml"], job_type="resize-image")
    envelope = producer.build(target, {"id": "img-1", "width": 64}, key="img-1", deadline="10m")
    # delay="10m" or at=datetime(...): the job waits until then
    asyncio.run(producer.send(target, [envelope]))

`build` refuses, with `InvalidJob` naming the field, data that the worker runtime would dead-letter
(the JobType's input schema, its idempotency key), a job type the pool does not serve, and a deadline
past the JobType's own; nothing is enqueued then. `send` writes each envelope as it is to the pool's
queue (Redis list, Redis stream or RabbitMQ; the queue of the JobType's priority level) and returns
once the server has it. Queue credentials come from WORKERFLEET_QUEUE_USERNAME /
WORKERFLEET_QUEUE_PASSWORD, or, from the cluster, from the Secrets the pool's queue auth references
when the caller may read them; the CA bundle of a queue with TLS from WORKERFLEET_QUEUE_CA, else from
the Secret its `tls.caSecretRef` names.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from workerfleet.api.base import API_VERSION
from workerfleet.api.common import SecretKeySelector
from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.queue_kinds import kind_of
from workerfleet.api.queue_kinds.base import CredentialNeeds
from workerfleet.api.worker_contract import WorkerEnv
from workerfleet.api.workerpool import Queue, WorkerPoolSpec
from workerfleet.kube.options import ClusterOptions
from workerfleet.worker.backend_factory import open_backend
from workerfleet.worker.envelope import Envelope, encode, new_envelope
from workerfleet.worker.inbox import level_queue_name, open_inbox
from workerfleet.worker.runtime import build_validators, input_problem
from workerfleet.worker.settings import ConfigurationError, WorkerSettings

if TYPE_CHECKING:
    from workerfleet.kube.client import Kube

PRODUCER_COMPONENT = "producer"
"""The User-Agent's component of a program enqueueing through `from_cluster`."""
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class InvalidJob(ValueError):  # noqa: N818  (names what the job is)
    """The job would not run as given; the message names the field and what to change."""


@dataclass(frozen=True)
class Target:
    """Where a job of one type goes: the pool's queue, and the JobType that judges it."""

    pool: str
    queue: Queue
    served: tuple[str, ...]
    job_type: str
    spec: JobTypeSpec
    credentials: Credentials


def parse_duration(text: str) -> int:
    """Seconds in `90s`, `10m`, `2h`, `1h30m` or a plain number of seconds."""
    match = _DURATION.fullmatch(text.strip())
    if text.strip().isdigit():
        seconds = int(text)
    elif match is not None and any(match.groups()):
        hours, minutes, secs = (int(group or 0) for group in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise InvalidJob(f"deadline {text!r} is not a duration such as 90s, 10m, 2h or 1h30m")
    if seconds < 1:
        raise InvalidJob("deadline must be at least 1s")
    return seconds


def _with_key(payload: Any, key_field: str, key: str) -> Any:
    """The payload with `key` at the dotted `key_field` (created where missing)."""
    if not isinstance(payload, dict):
        raise InvalidJob(f"--key needs the data to be a JSON object, to set {key_field} in it")
    result = dict(payload)
    node = result
    *parents, leaf = key_field.split(".")
    for part in parents:
        child = node.get(part, {})
        if not isinstance(child, dict):
            raise InvalidJob(f"data field {part} must be an object to hold the idempotency key {key_field}")
        node[part] = dict(child)
        node = node[part]
    if leaf in node and str(node[leaf]) != key:
        raise InvalidJob(f"data field {key_field} is {node[leaf]!r} but --key says {key!r}; give one of them")
    node[leaf] = key
    return result


def due_time(now: datetime, *, delay: str | int | None = None, at: datetime | str | None = None) -> datetime:
    """When a job asked to wait (`delay`: seconds or 90s/10m/2h; `at`: a time with its zone, or ISO
    8601 text) becomes due; `now` when it did not ask. InvalidJob names the flag that is wrong."""
    if delay is not None and at is not None:
        raise InvalidJob("give --delay or --at, not both")
    if delay is not None:
        try:
            return now + timedelta(seconds=parse_duration(delay) if isinstance(delay, str) else delay)
        except InvalidJob:
            raise InvalidJob(f"--delay {delay!r} is not a duration such as 90s, 10m, 2h or 1h30m") from None
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidJob(f"--at {at!r} is not a time such as 2026-05-01T03:00:00Z") from None
    if at is not None and at.tzinfo is None:
        raise InvalidJob(f"--at {at.isoformat()} has no time zone: add Z or an offset such as +02:00")
    return max(at, now) if at is not None else now


def build(
    target: Target,
    data: Any,
    *,
    key: str | None = None,
    deadline: str | int | None = None,
    job_id: str | None = None,
    now: datetime | None = None,
    delay: str | int | None = None,
    at: datetime | str | None = None,
) -> Envelope:
    """The envelope the runtime reads, or InvalidJob naming what the worker would refuse. A job with
    `delay` or `at` waits until then: its enqueuedAt is that time (deadlines count from it), and `send`
    holds it back until it comes."""
    if target.job_type not in target.served:
        raise InvalidJob(
            f"pool {target.pool} does not serve job type {target.job_type} "
            f"(spec.jobTypes: {', '.join(target.served)}); its workers would dead-letter the job"
        )
    spec = target.spec
    if key is not None:
        if spec.idempotency is None:
            raise InvalidJob(
                f"job type {target.job_type} has no idempotency.keyField, so --key would be ignored; "
                "put the key in the data, or set idempotency on the JobType"
            )
        data = _with_key(data, spec.idempotency.key_field, key)
    deadline_seconds = parse_duration(deadline) if isinstance(deadline, str) else deadline
    if (
        deadline_seconds is not None
        and spec.deadline_seconds is not None
        and deadline_seconds > spec.deadline_seconds
    ):
        raise InvalidJob(
            f"deadline {deadline_seconds}s is past job type {target.job_type}'s deadlineSeconds "
            f"({spec.deadline_seconds}s); a job's deadline can only be shorter"
        )
    validator = build_validators({target.job_type: spec}).get(target.job_type)
    problem = input_problem(validator, spec, data)
    if problem is not None:
        raise InvalidJob(f"job type {target.job_type}: {problem}")
    return new_envelope(
        target.job_type,
        data,
        now=due_time(now or datetime.now(UTC), delay=delay, at=at),
        job_id=job_id or str(uuid.uuid4()),
        deadline_seconds=deadline_seconds,
    )


async def send(target: Target, envelopes: Sequence[Envelope]) -> None:
    """Write the envelopes, in order, to the pool's queue; raises BackendUnavailable when it cannot.
    An envelope enqueued in the future (`build`'s delay or at) waits where the workers keep retries for
    their backoff (a Redis `<queue>:delayed` set, a RabbitMQ delay queue) and reaches the queue when
    due; on Redis a running worker moves it there, within a heartbeat of its time."""
    now = datetime.now(UTC)
    later = [envelope for envelope in envelopes if envelope.enqueued_at > now]
    if later:
        inbox = open_inbox(target.queue, target.credentials)
        await inbox.connect()
        try:
            for envelope in later:
                await inbox.enqueue_later(
                    level_queue_name(target.queue, target.spec.priority),
                    encode(envelope),
                    envelope.enqueued_at,
                )
        finally:
            await inbox.close()
    envelopes = [envelope for envelope in envelopes if envelope.enqueued_at <= now]
    if not envelopes:
        return
    settings = WorkerSettings(
        pool=target.pool,
        revision="",
        worker_id=f"producer-{uuid.uuid4().hex[:8]}",
        queue=target.queue,
        credentials=target.credentials,
        policies_path=Path(os.devnull),
    )
    backend = open_backend(settings, {target.job_type: target.spec})
    await backend.connect()
    try:
        for envelope in envelopes:
            await backend.enqueue(encode(envelope))
    finally:
        await backend.close()


def describe(queue: Queue) -> str:
    """Where jobs of this queue go, for people."""
    kind, backend = kind_of(queue)
    return kind.describe(backend)


def _environment_credentials(*, store: bool = False) -> Credentials:
    """WORKERFLEET_QUEUE_* (with `store`, WORKERFLEET_STORE_*: the idempotency store's) as set."""
    username, password, ca = (
        (WorkerEnv.STORE_USERNAME, WorkerEnv.STORE_PASSWORD, WorkerEnv.STORE_CA)
        if store
        else (WorkerEnv.QUEUE_USERNAME, WorkerEnv.QUEUE_PASSWORD, WorkerEnv.QUEUE_CA)
    )
    return Credentials(
        username=os.environ.get(username) or None,
        password=os.environ.get(password) or None,
        ca_pem=os.environ.get(ca) or None,
    )


def _with_address(queue: Queue, address: str | None) -> Queue:
    """The queue with another address (a port-forward to the pool's server, say)."""
    if address is None:
        return queue
    document = queue.to_dict()
    for backend in document.values():
        backend["address"] = address
    return Queue.model_validate(document)


def _pool_spec(document: Mapping[str, Any], source: str) -> tuple[str, WorkerPoolSpec]:
    if document.get("kind") != "WorkerPool":
        raise InvalidJob(f"{source} is not a WorkerPool manifest (kind: {document.get('kind')!r})")
    try:
        return str(document["metadata"]["name"]), WorkerPoolSpec.model_validate(document.get("spec"))
    except (KeyError, TypeError, ValidationError) as error:
        raise InvalidJob(f"{source}: not a valid WorkerPool: {error}") from None


def _job_type_spec(document: Mapping[str, Any], source: str) -> tuple[str, JobTypeSpec]:
    if document.get("kind") != "JobType":
        raise InvalidJob(f"{source} is not a JobType manifest (kind: {document.get('kind')!r})")
    try:
        return str(document["metadata"]["name"]), JobTypeSpec.model_validate(document.get("spec"))
    except (KeyError, TypeError, ValidationError) as error:
        raise InvalidJob(f"{source}: not a valid JobType: {error}") from None


def _documents(path: str) -> list[dict[str, Any]]:
    try:
        return [
            document for document in yaml.safe_load_all(Path(path).read_text()) if isinstance(document, dict)
        ]
    except OSError as error:
        raise InvalidJob(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise InvalidJob(f"{path} is not YAML: {error}") from None


def from_files(
    pool_file: str, job_type_files: Iterable[str], *, job_type: str, address: str | None = None
) -> Target:
    """The target from manifests on disk (a WorkerPool, and JobTypes: one file may hold several)."""
    pool_name, pool = _pool_spec(next(iter(_documents(pool_file)), {}), pool_file)
    spec = _job_type_from_files(job_type_files, job_type)
    return Target(
        pool=pool_name,
        queue=_with_address(pool.queue, address),
        served=tuple(pool.job_types),
        job_type=job_type,
        spec=spec,
        credentials=_environment_credentials(),
    )


def from_cluster(
    namespace: str,
    *,
    pool: str,
    job_type: str,
    job_type_files: Iterable[str] = (),
    address: str | None = None,
    cluster: ClusterOptions | None = None,
) -> Target:
    """The target from the cluster (the kubeconfig's current context, or `cluster`'s choice): the
    WorkerPool, and the JobType unless a file gives it. Queue credentials: the environment's, else
    the pool's queue Secrets where readable."""
    from workerfleet.kube.client import Kube  # noqa: PLC0415  (only this path needs a cluster)
    from workerfleet.kube.rest import Rest  # noqa: PLC0415

    api = Kube(Rest(cluster or ClusterOptions(component=PRODUCER_COMPONENT)))
    document = api.read(API_VERSION, "WorkerPool", namespace, pool)
    if document is None:
        raise InvalidJob(f"WorkerPool {namespace}/{pool} not found")
    _, pool_spec = _pool_spec(document, f"WorkerPool {namespace}/{pool}")
    files = list(job_type_files)
    if files:
        spec = _job_type_from_files(files, job_type)
    else:
        found = api.read(API_VERSION, "JobType", namespace, job_type)
        if found is None:
            raise InvalidJob(f"JobType {namespace}/{job_type} not found")
        _, spec = _job_type_spec(found, f"JobType {namespace}/{job_type}")
    queue = pool_spec.queue
    credentials = cluster_credentials(api, namespace, pool, queue).queue
    return Target(
        pool=pool,
        queue=_with_address(queue, address),
        served=tuple(pool_spec.job_types),
        job_type=job_type,
        spec=spec,
        credentials=credentials,
    )


@dataclass(frozen=True)
class PoolCredentials:
    """What a client of a pool's queue needs: the queue's credentials, and its idempotency store's."""

    queue: Credentials
    store: Credentials


def cluster_credentials(api: Kube, namespace: str, pool: str, queue: Queue) -> PoolCredentials:
    """The pool's queue credentials as the caller may read them: from the environment
    (WORKERFLEET_QUEUE_*), else from the Secrets the queue's auth and TLS name, read with the caller's
    own RBAC. InvalidJob names a Secret the caller may not read, and how to get access."""
    from workerfleet.kube.client import CredentialsNotGrantedError  # noqa: PLC0415  (cluster only)

    def value(reference: SecretKeySelector, variable: str) -> str:
        try:
            return api.secret_value(namespace, reference.name, reference.key)
        except CredentialsNotGrantedError:
            raise InvalidJob(
                f"you may not read Secret {namespace}/{reference.name}, which holds the credentials of "
                f"WorkerPool {namespace}/{pool}'s queue: ask for `get` on it (a Role in {namespace}), "
                f"or set {variable}"
            ) from None
        except LookupError as error:
            raise InvalidJob(f"{error}; set {variable} instead") from None

    def read(needs: CredentialNeeds, given: Credentials, prefix: str) -> Credentials:
        credentials = given
        if needs.password is not None and credentials.password is None:
            variables = f"{prefix}_USERNAME / {prefix}_PASSWORD"
            credentials = Credentials(
                username=value(needs.username, variables) if needs.username is not None else None,
                password=value(needs.password, variables),
                ca_pem=credentials.ca_pem,
            )
        if needs.ca is not None and credentials.ca_pem is None:
            credentials = replace(credentials, ca_pem=value(needs.ca, f"{prefix}_CA to the CA bundle"))
        return credentials

    kind, backend = kind_of(queue)
    worker_needs = kind.worker_needs(backend)
    queue_needs = worker_needs.queue if worker_needs is not None else CredentialNeeds()
    store_needs = (worker_needs.store if worker_needs is not None else None) or CredentialNeeds()
    return PoolCredentials(
        queue=read(queue_needs, _environment_credentials(), "WORKERFLEET_QUEUE"),
        store=read(store_needs, _environment_credentials(store=True), "WORKERFLEET_STORE"),
    )


def _job_type_from_files(job_type_files: Iterable[str], job_type: str) -> JobTypeSpec:
    files = list(job_type_files)
    for path in files:
        for document in _documents(path):
            if document.get("kind") == "JobType" and (document.get("metadata") or {}).get("name") == job_type:
                return _job_type_spec(document, path)[1]
    raise InvalidJob(f"job type {job_type} is in none of the files given ({', '.join(files)})")


__all__ = [
    "ConfigurationError",
    "InvalidJob",
    "Target",
    "build",
    "describe",
    "due_time",
    "from_cluster",
    "from_files",
    "parse_duration",
    "send",
]
