"""Where the operator acts for pools: which namespaces it serves and which addresses pools may name.

Pure: the handlers ask before they read a pool's Secrets or send anything to its queue or Prometheus.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from workerfleet.api.common import split_host_port
from workerfleet.api.queue_kinds import kind_of
from workerfleet.api.queue_kinds.base import Allowlist
from workerfleet.api.workerpool import Queue

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
