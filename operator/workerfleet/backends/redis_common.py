"""The Redis connection both Redis sources use."""

from __future__ import annotations

from redis.asyncio import Redis

from workerfleet.api.common import split_host_port
from workerfleet.backends.base import Credentials

TIMEOUT_SECONDS = 5.0


def connect(address: str, database: int, credentials: Credentials, tls: bool) -> Redis:
    host, port = split_host_port(address)
    return Redis(
        host=host,
        port=port,
        db=database,
        username=credentials.username,
        password=credentials.password,
        ssl=tls,
        ssl_ca_data=credentials.ca_pem if tls else None,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
    )
