"""The connection settings of a Redis client, the same for the operator's depth sources and the worker
runtime: which server and database, who logs in, and TLS as `spec.queue.<backend>.tls` asks."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Connection

from workerfleet.api.common import TLSConfig
from workerfleet.api.credentials import Credentials
from workerfleet.tls import RedisTLSConnection, client_context


def server_options(host: str, port: int, database: int, credentials: Credentials) -> dict[str, Any]:
    """Where the client connects and as whom (arguments of a Redis client or connection pool)."""
    return {
        "host": host,
        "port": port,
        "db": database,
        "username": credentials.username,
        "password": credentials.password,
    }


def connection_options(tls: TLSConfig | None, credentials: Credentials) -> dict[str, Any]:
    """A connection pool's connection class: plain, or TLS verified against the CA in `credentials`
    (the system's when absent) and `tls.serverName`."""
    if tls is None:
        return {"connection_class": Connection}
    return {
        "connection_class": RedisTLSConnection,
        "tls_context": client_context(credentials.ca_pem, tls.server_name),
    }
