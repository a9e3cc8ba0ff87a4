"""What every queue depth source offers: read a sample, close. Small on purpose, like a KEDA scaler."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from workerfleet.api.base import MAX_COUNT
from workerfleet.backends.bounds import AnswerOutOfBoundsError, decode_json
from workerfleet.planners.scaling import ScalingReason
from workerfleet.tls import tls_problem


class QueueUnreachableError(RuntimeError):
    """The backend could not be read; the message says why, without credentials. `reason`: the
    condition reason: QueueUnreachable, or the BoundReason of an answer past one of the operator's bounds."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or ScalingReason.QUEUE_UNREACHABLE


def failure(error: BaseException) -> str:
    """A failed read in a few fixed words: the error's kind (and the OS's words for a failed
    connection; the local TLS library's for a refused certificate), never text the server sent, which
    status and Events would show to whoever reads the pool."""
    problem = tls_problem(error)
    if problem is not None:
        return problem
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    return type(error).__name__


@dataclass(frozen=True)
class QueueSample:
    depth: int
    """Jobs not yet done, where the backend can tell: waiting, in flight, and retries waiting for their
    backoff (RabbitMQ tells only the ready ones; see backends.rabbitmq)."""
    oldest_age_seconds: float | None = None
    """Age of the oldest waiting job, where the backend can tell."""

    def __post_init__(self) -> None:
        # A server may answer any integer; status holds 0..MAX_COUNT, and a refused status patch would
        # leave the pool's reading stuck.
        object.__setattr__(self, "depth", within_count(self.depth))


def within_count(number: int) -> int:
    """`number` held to what a status count can hold (0..MAX_COUNT)."""
    return min(max(number, 0), MAX_COUNT)


class DepthSource(Protocol):
    async def read(self) -> QueueSample: ...

    async def close(self) -> None: ...


def envelope_age_seconds(raw: bytes | str | None, now: datetime) -> float | None:
    """Age of a job from its envelope's enqueuedAt; None when the message is not an envelope (or nests
    past the operator's bound)."""
    if raw is None:
        return None
    try:
        envelope = decode_json(raw.encode() if isinstance(raw, str) else raw)
        stamp = envelope.get("enqueuedAt") if isinstance(envelope, dict) else None
        enqueued = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    except (AnswerOutOfBoundsError, ValueError):
        return None
    if enqueued is None or enqueued.tzinfo is None:
        return None
    return max(0.0, (now - enqueued).total_seconds())
