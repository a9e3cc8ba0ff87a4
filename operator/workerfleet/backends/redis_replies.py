"""Redis replies read within the operator's bounds: the depth sources' connections parse each reply
with a budget of bytes and a limit on nesting, so a huge job at the head of a list, or an endpoint
that only pretends to be Redis, costs the operator no more than that and fails that read alone.

redis-py's own parsers read whatever length a reply announces; these wrap them (RESP2 and RESP3, and
the switch to RESP2 with a server that has no HELLO) and refuse before reading past a bound.
"""

from __future__ import annotations

from typing import Any

from redis._parsers import _AsyncRESP2Parser, _AsyncRESP3Parser, _AsyncRESPBase
from redis.asyncio import Connection
from redis.exceptions import InvalidResponse

from workerfleet.backends.bounds import MAX_ANSWER_NESTING, BoundReason
from workerfleet.tls import RedisTLSConnection

MAX_REDIS_REPLY_BYTES = 16 * 1024 * 1024
"""A reply the depth sources read is a count, the oldest job (for its age), or up to 10,000 stream
entries (to count a group's undelivered entries where Redis does not report its lag)."""


class ReplyOutOfBoundsError(InvalidResponse):
    """A reply past one of the bounds; redis-py drops the connection, whose reply is left half-read."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _too_large() -> ReplyOutOfBoundsError:
    return ReplyOutOfBoundsError(
        f"reply larger than {MAX_REDIS_REPLY_BYTES // 2**20} MiB, the operator's bound",
        BoundReason.TOO_LARGE,
    )


class _BoundedReplies(_AsyncRESPBase):
    """Charges every line and every bulk string of a reply to its budget before reading it."""

    _budget = MAX_REDIS_REPLY_BYTES
    _nesting = 0

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        self._budget, self._nesting = MAX_REDIS_REPLY_BYTES, 0
        return await super().read_response(*args, **kwargs)

    async def _read_response(self, *args: Any, **kwargs: Any) -> Any:
        self._nesting += 1
        try:
            if self._nesting > MAX_ANSWER_NESTING:
                raise ReplyOutOfBoundsError(
                    f"reply nested deeper than {MAX_ANSWER_NESTING} levels, the operator's bound",
                    BoundReason.TOO_DEEP,
                )
            return await super()._read_response(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._nesting -= 1

    def _charge(self, length: int) -> None:
        self._budget -= length
        if self._budget < 0:
            raise _too_large()

    async def _read(self, length: int) -> bytes:
        self._charge(length + 2)
        return await super()._read(length)

    async def _readline(self) -> bytes:
        try:
            line = await super()._readline()
        except ValueError:  # a line past the stream reader's limit (64 KiB)
            raise _too_large() from None
        self._charge(len(line) + 2)
        return line


class BoundedRESP2Parser(_BoundedReplies, _AsyncRESP2Parser):
    pass


class BoundedRESP3Parser(_BoundedReplies, _AsyncRESP3Parser):
    pass


_BOUNDED = {_AsyncRESP2Parser: BoundedRESP2Parser, _AsyncRESP3Parser: BoundedRESP3Parser}


class BoundedConnection(Connection):
    """A connection whose parser, whichever protocol it speaks, reads within the bounds."""

    def set_parser(self, parser_class: type[Any]) -> None:
        super().set_parser(_BOUNDED.get(parser_class, parser_class))


class BoundedTLSConnection(RedisTLSConnection):
    def set_parser(self, parser_class: type[Any]) -> None:
        super().set_parser(_BOUNDED.get(parser_class, parser_class))


def bounded(options: dict[str, Any]) -> dict[str, Any]:
    """Connection options (redis_options.connection_options) with the bounded connection class, and
    the Python parser even where hiredis is installed (its C parser cannot be bounded)."""
    plain = options["connection_class"] is not RedisTLSConnection
    return {
        **options,
        "connection_class": BoundedConnection if plain else BoundedTLSConnection,
        "parser_class": _AsyncRESP3Parser,
    }
