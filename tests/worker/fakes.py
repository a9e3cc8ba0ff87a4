"""An in-memory queue backend that records how each delivery was settled."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec

from workerfleet.worker.backend import (
    BackendUnavailable,
    ClaimAnswer,
    CompletedKey,
    Delivery,
    KeyClaim,
    KeyState,
)

P = ParamSpec("P")


@dataclass
class MemoryBackend:
    waiting: deque[bytes] = field(default_factory=deque)
    completed: list[bytes] = field(default_factory=list)
    retried: list[tuple[bytes, float]] = field(default_factory=list)
    moved: list[tuple[str | None, bytes]] = field(default_factory=list)
    released: list[bytes] = field(default_factory=list)
    completed_keys: set[str] = field(default_factory=set)
    claims: dict[str, str] = field(default_factory=dict)
    """Claimed keys and their holders (leases never run out here)."""
    claims_asked: list[str] = field(default_factory=list)
    deferred: list[tuple[bytes, float]] = field(default_factory=list)
    unavailable_receives: int = 0
    """The next this many receives fail as if the server were down."""
    connects: int = 0
    closed: bool = False
    stopped_receiving: bool = False

    async def connect(self) -> None:
        self.connects += 1

    async def close(self) -> None:
        self.closed = True

    async def receive(self, max_count: int, wait_seconds: float) -> Sequence[Delivery]:
        if self.unavailable_receives:
            self.unavailable_receives -= 1
            raise BackendUnavailable("fake outage")
        if not self.waiting:
            await asyncio.sleep(min(wait_seconds, 0.01))
            return []
        count = min(max_count, len(self.waiting))
        return [Delivery(self.waiting.popleft(), None) for _ in range(count)]

    async def stop_receiving(self) -> None:
        self.stopped_receiving = True

    async def complete(self, delivery: Delivery, completed_key: CompletedKey | None) -> None:
        self.completed.append(delivery.body)
        if completed_key is not None:
            self.completed_keys.add(completed_key.key)
            self.claims.pop(completed_key.key, None)

    async def retry(self, delivery: Delivery, body: bytes, delay_seconds: float) -> None:
        self.retried.append((body, delay_seconds))

    async def move(self, delivery: Delivery, queue: str | None, body: bytes) -> None:
        self.moved.append((queue, body))

    async def release(self, delivery: Delivery) -> None:
        self.released.append(delivery.body)

    async def claim(self, claim: KeyClaim) -> ClaimAnswer:
        self.claims_asked.append(claim.key)
        if claim.key in self.completed_keys:
            return ClaimAnswer(KeyState.COMPLETED)
        holder = self.claims.setdefault(claim.key, claim.holder)
        if holder != claim.holder:
            return ClaimAnswer(KeyState.HELD, held_for_seconds=claim.lease_seconds)
        return ClaimAnswer(KeyState.CLAIMED)

    async def release_claim(self, claim: KeyClaim) -> None:
        if self.claims.get(claim.key) == claim.holder:
            del self.claims[claim.key]

    async def defer(self, delivery: Delivery, delay_seconds: float) -> None:
        self.deferred.append((delivery.body, delay_seconds))

    async def maintain(self) -> None:
        return None

    async def enqueue(self, body: bytes) -> None:
        self.waiting.append(body)

    @property
    def settled(self) -> int:
        return (
            len(self.completed)
            + len(self.retried)
            + len(self.moved)
            + len(self.released)
            + len(self.deferred)
        )


def run_async(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test function in a fresh event loop (keeps the test suite free of async plugins)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(test(*args, **kwargs))

    return run
