"""What every queue backend (a "kind": one field of `spec.queue`) tells the rest of workerfleet.

A kind module holds its backend's pure facts: which field of `Queue` selects it, its queue's name,
the Secret keys its clients read, its KEDA trigger and what KEDA cannot do for it, and what a worker
container needs. The I/O that talks to the backend (the operator's depth source under `backends/`,
the worker's consumer under `worker/`) is found by the kind's `name`. Nothing outside the kind modules
and the registry asks which backend a queue names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from workerfleet.api.common import SecretKeySelector, TLSConfig
from workerfleet.api.worker_contract import WorkerEnv


class Allowlist(StrEnum):
    """Which of the operator's allowlists an address is checked against (chart value allowedAddresses.*)."""

    QUEUES = "queues"
    """`host:port` of a queue server."""
    PROMETHEUS = "prometheus"
    """Base URL of a Prometheus."""


@dataclass(frozen=True)
class CredentialNeeds:
    """The Secret keys a client of the backend reads, each by the `Credentials` field it fills."""

    username: SecretKeySelector | None = None
    password: SecretKeySelector | None = None
    bearer_token: SecretKeySelector | None = None
    ca: SecretKeySelector | None = None
    """The CA bundle its TLS names (`tls.caSecretRef`); becomes `Credentials.ca_pem`."""

    def references(self) -> Iterator[tuple[str, SecretKeySelector]]:
        """(`Credentials` field, Secret key) for each key needed, in a fixed order."""
        for name, reference in (
            ("username", self.username),
            ("password", self.password),
            ("bearer_token", self.bearer_token),
            ("ca_pem", self.ca),
        ):
            if reference is not None:
                yield name, reference


class ServerAuth(Protocol):
    """A user name and password by Secret reference (Redis and RabbitMQ auth)."""

    @property
    def username_secret_ref(self) -> SecretKeySelector | None: ...

    @property
    def password_secret_ref(self) -> SecretKeySelector: ...


def server_needs(auth: ServerAuth | None, tls: TLSConfig | None) -> CredentialNeeds:
    """What a server with optional user/password auth and optional TLS asks of its clients."""
    return CredentialNeeds(
        username=auth.username_secret_ref if auth is not None else None,
        password=auth.password_secret_ref if auth is not None else None,
        ca=tls.ca_secret_ref if tls is not None else None,
    )


@dataclass(frozen=True)
class WorkerNeeds:
    """What a worker container of the pool reads from Secrets, besides the queue's JSON: the queue's
    credentials, and those of a separate idempotency store. A producer reads the same."""

    queue: CredentialNeeds
    store: CredentialNeeds | None = None

    def environment(self) -> list[tuple[WorkerEnv, SecretKeySelector]]:
        """The worker's environment variables, each with the Secret key it comes from."""
        variables: list[tuple[WorkerEnv, SecretKeySelector]] = []
        for needs, username, password, ca in (
            (self.queue, WorkerEnv.QUEUE_USERNAME, WorkerEnv.QUEUE_PASSWORD, WorkerEnv.QUEUE_CA),
            (self.store, WorkerEnv.STORE_USERNAME, WorkerEnv.STORE_PASSWORD, WorkerEnv.STORE_CA),
        ):
            if needs is None:
                continue
            for variable, reference in (
                (username, needs.username),
                (password, needs.password),
                (ca, needs.ca),
            ):
                if reference is not None:
                    variables.append((variable, reference))
        return variables


@dataclass(frozen=True)
class KedaTrigger:
    """A KEDA scaler trigger, without its authenticationRef."""

    type: str
    metadata: dict[str, str]
    secrets: list[tuple[str, SecretKeySelector]] = field(default_factory=list)
    """(TriggerAuthentication parameter, Secret key) the scaler authenticates with."""


Spec_contra = TypeVar("Spec_contra", contravariant=True)


class QueueKind(Protocol[Spec_contra]):
    """One queue backend. `Spec_contra` is its model, the value of its field of `Queue`."""

    @property
    def name(self) -> str:
        """Its key under spec.queue, as written in manifests (`redisStream`); the registry's key too."""

    @property
    def field(self) -> str:
        """Its attribute of the `Queue` model (`redis_stream`)."""

    @property
    def product(self) -> str:
        """The server's name for messages (`Redis`, `RabbitMQ`)."""

    @property
    def keda_takes_ca(self) -> bool:
        """Whether KEDA's scaler can be given `tls.caSecretRef` (no KEDA scaler takes `tls.serverName`)."""

    def queue_name(self, spec: Spec_contra) -> str | None:
        """The name of the queue on its server; None where workerfleet does not know it."""

    def describe(self, spec: Spec_contra) -> str:
        """Where the jobs wait, for people."""

    def address(self, spec: Spec_contra) -> tuple[str, Allowlist]:
        """The address the operator contacts, and the allowlist it must be in."""

    def credentials(self, spec: Spec_contra) -> CredentialNeeds:
        """What the operator's depth source reads from the pool's Secrets."""

    def keda_trigger(self, spec: Spec_contra, target: str, activation: str) -> KedaTrigger:
        """The KEDA trigger scaling on this queue at `target` per replica, active from `activation`."""

    def worker_needs(self, spec: Spec_contra) -> WorkerNeeds | None:
        """What a worker container reads from Secrets; None: workerfleet's worker does not consume
        this backend (the pool's workers bring their own client)."""

    def keys_shared(self, spec: Spec_contra) -> bool:
        """Whether the completed idempotency keys are known to every worker of the pool (else only
        to the process that completed them)."""


class QueueServer(Protocol):
    """Settings of a queue server workerfleet's own clients talk to."""

    @property
    def address(self) -> str: ...

    @property
    def auth(self) -> ServerAuth | None: ...

    @property
    def tls(self) -> TLSConfig | None: ...


Server = TypeVar("Server", bound=QueueServer)


class ServerKind(Generic[Server]):
    """What the kinds of a `host:port` queue server share: the queue allowlist, user/password auth and
    TLS for the operator and the workers alike, and idempotency keys kept on that server."""

    def address(self, spec: Server) -> tuple[str, Allowlist]:
        return spec.address, Allowlist.QUEUES

    def credentials(self, spec: Server) -> CredentialNeeds:
        return server_needs(spec.auth, spec.tls)

    def worker_needs(self, spec: Server) -> WorkerNeeds | None:
        return WorkerNeeds(self.credentials(spec))

    def keys_shared(self, spec: Server) -> bool:
        return True
