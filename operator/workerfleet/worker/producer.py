"""Put jobs on a pool's queue in the envelope format: for tests, demos and simple producers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from workerfleet.worker.backend import QueueBackend
from workerfleet.worker.envelope import Envelope, encode, new_envelope


async def enqueue(
    backend: QueueBackend,
    job_type: str,
    payload: Any,
    *,
    job_id: str | None = None,
    enqueued_at: datetime | None = None,
) -> Envelope:
    """Enqueue one job (first attempt) on the backend's queue; returns the envelope as sent."""
    envelope = new_envelope(job_type, payload, now=enqueued_at or datetime.now(UTC), job_id=job_id)
    await backend.enqueue(encode(envelope))
    return envelope
