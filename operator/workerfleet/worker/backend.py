"""The one small interface every queue backend implements, so the runtime is the same on all of them.

A backend hands out deliveries and settles each one exactly once: complete, retry, move (to a
dead-letter or review queue) or release (give back unfinished, as it was). Until settled, a delivery
stays claimed on the server (a processing list, a stream's pending entries, an unacknowledged message),
so a worker that dies holding it loses nothing: the backend's recovery gives it to another worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class BackendUnavailable(Exception):  # noqa: N818  (a state the runtime waits out, not a bug)
    """The queue server cannot be reached; the runtime reconnects with backoff."""


class DeliveryLost(Exception):  # noqa: N818
    """A delivery can no longer be settled (its connection is gone); the server redelivers it."""


class DestinationRefused(Exception):  # noqa: N818
    """The server refused to write the job where it was to go (a Redis key of another type, a full or
    vanished RabbitMQ queue). Nothing was removed: the job is still claimed, as it was."""

    def __init__(self, destination: str, reason: str) -> None:
        super().__init__(f"{destination}: {reason}")
        self.destination = destination


@dataclass(frozen=True)
class Delivery:
    """One job taken from the queue: the message as received and the backend's handle to settle it."""

    body: bytes
    handle: object
    deliveries: int = 1
    """How often the queue has handed out this job so far, this time included, without it being settled
    (or given back): more than 1 means workers died holding it. 1 where the backend cannot tell."""


@dataclass(frozen=True)
class CompletedKey:
    """An idempotency key to remember, atomically with acknowledging its job, for `ttl_seconds`."""

    key: str
    ttl_seconds: int


class QueueBackend(Protocol):
    """A queue the runtime consumes. Connection failures raise BackendUnavailable."""

    async def connect(self) -> None:
        """Open connections and declare what the backend needs; safe to call again after a failure."""

    async def close(self) -> None:
        """Give back everything still claimed and close connections."""

    async def receive(self, max_count: int, wait_seconds: float) -> Sequence[Delivery]:
        """Up to `max_count` jobs; waits at most about `wait_seconds` for the first one."""

    async def stop_receiving(self) -> None:
        """A drain begins: take no more jobs, and give back at once any the server already pushed to this
        worker that were not handed out yet (RabbitMQ's prefetched messages)."""

    async def complete(self, delivery: Delivery, completed_key: CompletedKey | None) -> None:
        """The job is done: acknowledge it and remember its idempotency key."""

    async def retry(self, delivery: Delivery, body: bytes, delay_seconds: float) -> None:
        """Replace the job with `body` (its next attempt), available again after `delay_seconds`.
        The job is removed only once `body` is stored: else DestinationRefused, and nothing changed."""

    async def move(self, delivery: Delivery, queue: str | None, body: bytes) -> None:
        """Take the job off the queue; put `body` on `queue` on the same server, or drop it when None.
        The job is removed only once `body` is on `queue`: else DestinationRefused, and nothing changed."""

    async def release(self, delivery: Delivery) -> None:
        """Give the job back untouched, at once, for any worker to take."""

    async def is_completed(self, key: str) -> bool:
        """Whether a job with this idempotency key was completed within its key's TTL."""

    async def maintain(self) -> None:
        """Periodic upkeep: heartbeats, due retries back onto the queue, jobs of vanished workers."""

    async def enqueue(self, body: bytes) -> None:
        """Put a new job on the pool's queue (the producer side, for tests and demos)."""
