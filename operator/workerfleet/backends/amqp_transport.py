"""The AMQP connection of the RabbitMQ depth source, read within the operator's bounds.

aiormq reads whatever length a frame's header announces (up to 4 GiB), and to the end of the stream
after a malformed one; this transport's reader refuses both before reading: a frame is at most
MAX_ANSWER_BYTES (RabbitMQ's own default frame_max is 128 KiB). Imported with the AMQP client, on a
pool's first RabbitMQ read.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aio_pika import RobustConnection
from aiormq.connection import TransportFactory
from aiormq.exceptions import AMQPConnectionError
from yarl import URL

from workerfleet.backends.base import QueueUnreachableError
from workerfleet.backends.bounds import (
    ANSWER_TIMEOUT_SECONDS,
    MAX_ANSWER_BYTES,
    BoundReason,
    timed_out,
    too_large,
)
from workerfleet.tls import tls_problem


class FrameTooLargeError(AMQPConnectionError):
    """A frame past MAX_ANSWER_BYTES: the connection is dropped, its frame unread."""

    def __init__(self) -> None:
        bound = too_large()
        super().__init__(str(bound))
        self.reason = bound.reason


def frame_too_large(error: BaseException) -> FrameTooLargeError | None:
    """The FrameTooLargeError behind `error`: aiormq reports it as the cause of its own error."""
    cause: BaseException | None = error
    for _ in range(8):  # aiormq wraps once or twice
        if cause is None or isinstance(cause, FrameTooLargeError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


class BoundedStreamReader(asyncio.StreamReader):
    async def readexactly(self, n: int) -> bytes:
        if n > MAX_ANSWER_BYTES:
            raise FrameTooLargeError
        return await super().readexactly(n)

    async def read(self, n: int = -1) -> bytes:
        if n < 0 or n > MAX_ANSWER_BYTES:  # "to the end", after a malformed frame
            raise FrameTooLargeError
        return await super().read(n)


class BoundedTransport(TransportFactory):
    """asyncio.open_connection, with the bounded reader; TLS with our context, when given one."""

    def __init__(self, tls_context: ssl.SSLContext | None) -> None:
        self._tls_context = tls_context

    async def create(self, url: URL, **_: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if url.host is None or url.port is None:
            raise AMQPConnectionError("the queue address has no host or port")
        loop = asyncio.get_running_loop()
        reader = BoundedStreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _protocol = await loop.create_connection(
                lambda: protocol, url.host, url.port, ssl=self._tls_context
            )
        except OSError as error:
            raise AMQPConnectionError(*error.args) from error
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class BoundedRobustConnection(RobustConnection):
    """aio_pika's reconnecting connection over the bounded transport (aio_pika hands its keyword
    arguments to aiormq only this way; `connect_robust` would also write them into the URL)."""

    def __init__(
        self, url: URL, *args: Any, ssl_context: ssl.SSLContext | None = None, **kwargs: Any
    ) -> None:
        super().__init__(url, *args, ssl_context=ssl_context, **kwargs)
        self.kwargs["transport_factory"] = BoundedTransport(ssl_context)


async def connect_bounded(url: str, ssl_context: ssl.SSLContext | None) -> RobustConnection:
    """A connection to a tenant's RabbitMQ read within the operator's bounds, for any one-off use
    (review and dead-letter depths, a scheduled job's publish) as for the depth source."""
    connection = BoundedRobustConnection(URL(url), ssl_context=ssl_context, timeout=ANSWER_TIMEOUT_SECONDS)
    await connection.connect(timeout=ANSWER_TIMEOUT_SECONDS)
    return connection


def amqp_failure(what: str, error: BaseException) -> QueueUnreachableError:
    """A failed AMQP exchange about `what` as the pool's error: the bound it passed as reason, else the
    kind of failure (never the URL, which holds the password)."""
    too_large_frame = frame_too_large(error)
    if too_large_frame is not None:
        return QueueUnreachableError(f"{what}: {too_large_frame}", too_large_frame.reason)
    if isinstance(error, TimeoutError):
        bound = timed_out()
        return QueueUnreachableError(f"{what}: {bound}", bound.reason)
    if isinstance(error, RecursionError):  # the AMQP decoder recurses into nested field tables
        return QueueUnreachableError(
            f"{what}: answer nested too deep to decode, the operator's bound", BoundReason.TOO_DEEP
        )
    return QueueUnreachableError(f"{what}: {tls_problem(error) or type(error).__name__}")
