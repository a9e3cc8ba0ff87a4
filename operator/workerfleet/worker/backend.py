"""The one small interface every queue backend implements, so the runtime is the same on all of them.

A backend hands out deliveries and settles each one exactly once: complete, retry, move (to a
dead-letter or review queue) or release (give back unfinished, as it was). Until settled, a delivery
stays claimed on the server (a processing list, a stream's pending entries, an unacknowledged message),
so a worker that dies holding it loses nothing: the backend's recovery gives it to another worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
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


@dataclass(frozen=True)
class KeyClaim:
    """A claim on a keyed job's idempotency key while one delivery of it runs, so a second copy delivered
    at the same time does not run too. `holder` is the worker id: a worker may take over its own claim
    (a retry, or its container restarted in place), never another's before `lease_seconds` end."""

    key: str
    holder: str
    lease_seconds: float


class KeyState(Enum):
    COMPLETED = "completed"
    """A job with this key was completed within the key's TTL."""
    CLAIMED = "claimed"
    """The claim is now ours: run the job."""
    HELD = "held"
    """Another worker holds the claim: a copy of this job is running there."""


@dataclass(frozen=True)
class ClaimAnswer:
    state: KeyState
    held_for_seconds: float = 0.0
    """For HELD: how long the holder's lease still runs."""


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
        """The job is done: acknowledge it, remember its idempotency key and end the key's claim."""

    async def retry(self, delivery: Delivery, body: bytes, delay_seconds: float) -> None:
        """Replace the job with `body` (its next attempt), available again after `delay_seconds`.
        The job is removed only once `body` is stored: else DestinationRefused, and nothing changed."""

    async def move(self, delivery: Delivery, queue: str | None, body: bytes) -> None:
        """Take the job off the queue; put `body` on `queue` on the same server, or drop it when None.
        The job is removed only once `body` is on `queue`: else DestinationRefused, and nothing changed."""

    async def release(self, delivery: Delivery) -> None:
        """Give the job back untouched, at once, for any worker to take."""

    async def claim(self, claim: KeyClaim) -> ClaimAnswer:
        """In one step: whether the key was completed; else claim it for `claim.holder` (or renew the
        holder's own claim) with the lease; else say how long another holder's lease still runs."""

    async def release_claim(self, claim: KeyClaim) -> None:
        """The job was settled other than completed (or given back): end the claim, if still the holder's,
        so another copy or a retry can run. Completing a job ends its claim with it."""

    async def defer(self, delivery: Delivery, delay_seconds: float) -> None:
        """Give the job back unchanged, available again after `delay_seconds`; not an attempt, so crash
        counts are kept where the backend keeps them across a write (Redis list, RabbitMQ)."""

    async def maintain(self) -> None:
        """Periodic upkeep: heartbeats, due retries back onto the queue, jobs of vanished workers."""

    async def enqueue(self, body: bytes) -> None:
        """Put a new job on the pool's queue (the producer side, for tests and demos)."""
