"""Where the operator acts for pools: which namespaces it serves, which addresses pools may name, and
which Secrets it (or KEDA, for it) may use.

Pure: the handlers ask before they read a pool's Secrets, send anything to its queue or Prometheus,
or hand KEDA an address and a Secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from workerfleet.api.common import split_host_port
from workerfleet.api.queue_kinds import kind_of
from workerfleet.api.queue_kinds.base import Allowlist
from workerfleet.api.workerpool import Queue
from workerfleet.planners.scaling import ScalingReason

Refusal = tuple[str, str]
"""(reason, message): why a pool's queue may not be contacted, nor handed to KEDA."""

SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
"""Served only when named in watchNamespaces: no pool of the cluster's own belongs to a team."""


def serves_namespace(namespace: str, watch_namespaces: Sequence[str]) -> bool:
    """Whether pools and JobTypes in `namespace` are the operator's to act on."""
    if watch_namespaces:
        return namespace in watch_namespaces
    return namespace not in SYSTEM_NAMESPACES


def _host_and_port(entry: str) -> tuple[str, int | None]:
    host, colon, port = entry.rpartition(":")
    if colon and port.isdigit() and ":" not in host:
        return host.lower(), int(port)
    return entry.lower(), None


def queue_address_allowed(address: str, allowlist: Sequence[str]) -> bool:
    """`host:port` against entries `host:port`, `host` (any port) or `*.domain[:port]`; empty allows all."""
    if not allowlist:
        return True
    host, port = split_host_port(address)
    host = host.lower()
    for entry in allowlist:
        pattern, entry_port = _host_and_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def prometheus_allowed(address: str, allowlist: Sequence[str]) -> bool:
    """A Prometheus URL against base URLs (scheme, host, port and path prefix); empty allows all."""
    if not allowlist:
        return True
    wanted = urlsplit(address)
    for entry in allowlist:
        allowed = urlsplit(entry)
        path = allowed.path.rstrip("/")
        if (wanted.scheme, wanted.netloc.lower()) == (allowed.scheme, allowed.netloc.lower()) and (
            wanted.path.rstrip("/") == path or wanted.path.startswith(f"{path}/")
        ):
            return True
    return False


def refused_queue_address(
    queue: Queue, queue_allowlist: Sequence[str], prometheus_allowlist: Sequence[str]
) -> str | None:
    """Why the pool's queue may not be contacted, naming the address and the chart value; else None."""
    kind, backend = kind_of(queue)
    address, allowlist = kind.address(backend)
    if allowlist == Allowlist.QUEUES and not queue_address_allowed(address, queue_allowlist):
        return (
            f"queue address {address} is not in the operator's allowlist"
            " (chart value allowedAddresses.queues): use an allowed queue, or ask the cluster admin"
        )
    if allowlist == Allowlist.PROMETHEUS and not prometheus_allowed(address, prometheus_allowlist):
        return (
            f"Prometheus {address} is not in the operator's allowlist"
            " (chart value allowedAddresses.prometheus): use an allowed one, or ask the cluster admin"
        )
    return None


def address_refusal(
    queue: Queue, queue_allowlist: Sequence[str], prometheus_allowlist: Sequence[str]
) -> Refusal | None:
    """`AddressNotAllowed` with `refused_queue_address`'s message, or None when the address is allowed."""
    refused = refused_queue_address(queue, queue_allowlist, prometheus_allowlist)
    return None if refused is None else (ScalingReason.ADDRESS_NOT_ALLOWED, refused)


def secret_not_granted(namespace: str, names: Sequence[str]) -> str:
    secrets = ", ".join(f"{namespace}/{name}" for name in names)
    return f"the operator may not read Secret {secrets}"


def credentials_hint(namespace: str, problem: str, credentials_role: str) -> str:
    """The message of `CredentialsNotGranted`: what was refused, and who grants it how."""
    return (
        f"queue credentials: {problem}. A namespace admin grants it with a RoleBinding in {namespace}"
        f" of ClusterRole {credentials_role} to the operator's ServiceAccount (README: Security model)"
    )


def credentials_refusal(
    namespace: str, secrets: Sequence[str], readable: Mapping[str, bool], credentials_role: str
) -> Refusal | None:
    """`CredentialsNotGranted` naming each of `secrets` the operator may not read, or None.

    KEDA reads a TriggerAuthentication's Secrets under its own identity, so the operator's own right
    to read them stands for the namespace's opt-in; a Secret not looked at counts as not readable.
    """
    denied = [name for name in secrets if not readable.get(name, False)]
    if not denied:
        return None
    problem = secret_not_granted(namespace, denied)
    return (ScalingReason.CREDENTIALS_NOT_GRANTED, credentials_hint(namespace, problem, credentials_role))
