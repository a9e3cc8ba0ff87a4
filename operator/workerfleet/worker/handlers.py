"""The handler API: `@worker.handler("resize-image")` registers the code that runs one attempt of a job.

A handler takes a `Job` and returns when the job is done. It may be `async def` (preferred: a timeout
cancels it) or a plain function (run in a thread; a timeout counts the attempt as failed but cannot stop
the thread). It signals failure by raising: TransientError, PolicyRefusal or PermanentError from
`workerfleet.worker`, any other exception (class unknown), or NeedsReview for an ambiguous result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from workerfleet.worker.envelope import Approval, Envelope, FailureRecord

Handler = Callable[["Job"], Awaitable[None]] | Callable[["Job"], None]
RegisteredHandler = TypeVar("RegisteredHandler", bound=Handler)


@dataclass(frozen=True)
class Job:
    """What a handler sees of one attempt."""

    id: str
    type: str
    payload: Any
    attempt: int
    enqueued_at: datetime
    last_failure: FailureRecord | None
    approval: Approval | None = None
    """Set when a person approved this job in review: the handler asked for review before, and may now
    act on the decision."""

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Job:
        return cls(
            id=envelope.id,
            type=envelope.type,
            payload=envelope.payload,
            attempt=envelope.attempt,
            enqueued_at=envelope.enqueued_at,
            last_failure=envelope.last_failure,
            approval=envelope.approval,
        )


class HandlerRegistry:
    """Job type name -> handler; one handler per job type."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def handler(self, job_type: str) -> Callable[[RegisteredHandler], RegisteredHandler]:
        """Decorator: run the decorated function for jobs of `job_type`."""

        def register(function: RegisteredHandler) -> RegisteredHandler:
            existing = self._handlers.get(job_type)
            if existing is not None and existing is not function:
                raise ValueError(f"job type {job_type!r} already has a handler: {existing.__qualname__}")
            self._handlers[job_type] = function
            return function

        return register

    def handlers(self) -> Mapping[str, Handler]:
        return dict(self._handlers)


default_registry = HandlerRegistry()
handler = default_registry.handler
