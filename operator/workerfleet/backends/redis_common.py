"""The Redis connections both Redis depth sources use: one client per server, shared.

Thousands of autoscaled pools commonly name a handful of Redis servers; each server gets one client
(with its own connection pool) for all the pools that read it, not a client per pool.
"""

from __future__ import annotations

import asyncio

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis

from workerfleet.api.common import TLSConfig, split_host_port
from workerfleet.api.credentials import Credentials
from workerfleet.backends.base import QueueUnreachableError, failure
from workerfleet.backends.bounds import ANSWER_TIMEOUT_SECONDS, timed_out
from workerfleet.backends.redis_replies import ReplyOutOfBoundsError, bounded
from workerfleet.redis_options import connection_options, server_options

MAX_CONNECTIONS_PER_SERVER = 8
"""Connections one server gets from the operator at most, however many pools poll it at once (a poll
is two commands in one round trip: more connections would only add load to the server)."""

_ClientKey = tuple[int, str, int, str | None, str | None, bool, str | None, str | None]
_shared: dict[_ClientKey, tuple[Redis, int]] = {}
"""Client and number of sources using it, by event loop, server, database, credentials and TLS."""


def _loop_id() -> int:
    try:
        return id(asyncio.get_running_loop())
    except RuntimeError:
        return 0


def connect(address: str, database: int, credentials: Credentials, tls: TLSConfig | None) -> Redis:
    """A client for this server, database and credentials, shared with every other source that uses
    the same; give it back with `release`."""
    key: _ClientKey = (
        _loop_id(),
        address,
        database,
        credentials.username,
        credentials.password,
        tls is not None,
        credentials.ca_pem,
        tls.server_name if tls is not None else None,
    )
    client, users = _shared.get(key, (None, 0))
    if client is None:
        host, port = split_host_port(address)
        pool = BlockingConnectionPool(
            max_connections=MAX_CONNECTIONS_PER_SERVER,
            timeout=ANSWER_TIMEOUT_SECONDS,
            socket_timeout=ANSWER_TIMEOUT_SECONDS,
            socket_connect_timeout=ANSWER_TIMEOUT_SECONDS,
            **server_options(host, port, database, credentials),
            **bounded(connection_options(tls, credentials)),
        )
        client = Redis.from_pool(pool)
    _shared[key] = (client, users + 1)
    return client


async def release(client: Redis) -> None:
    """One source is done with `client`; the last one closes it."""
    for key, (shared, users) in list(_shared.items()):
        if shared is client:
            if users > 1:
                _shared[key] = (shared, users - 1)
                return
            del _shared[key]
            break
    await client.aclose()


MALFORMED_ANSWER = (ValueError, TypeError, AttributeError, KeyError, IndexError)
"""What redis-py's reply callbacks, and int() on a count, raise on an answer Redis would not give: an
endpoint that only pretends to be Redis fails that pool's read, not its poll."""


def unreadable(what: str, error: BaseException) -> QueueUnreachableError:
    """A failed read of `what` (e.g. "redis list 'jobs'") as the pool's error: the bound it passed as
    reason, else the kind of failure."""
    if isinstance(error, MALFORMED_ANSWER):
        return QueueUnreachableError(
            f"{what}: the answer is not a count as Redis gives it: is the address a Redis server?"
        )
    if isinstance(error, ReplyOutOfBoundsError):
        return QueueUnreachableError(f"{what}: {error}", error.reason)
    if isinstance(error, redis_errors.TimeoutError):
        bound = timed_out()
        return QueueUnreachableError(f"{what}: {bound}", bound.reason)
    return QueueUnreachableError(f"{what}: {failure(error)}")


def shared_clients() -> int:
    """How many clients are open: one per server in use, not one per pool."""
    return len(_shared)
