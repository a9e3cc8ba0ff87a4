"""The handler of the fleet-safety tests (`--handlers e2e.fleet_handlers`), job type `work`.

Each attempt sleeps the payload's "seconds" (default 0), then fails with a TransientError while the
file at $FLEET_FAIL_WHILE exists: a test breaks and mends every worker's downstream at once. A job
whose payload says "refused" fails with a PolicyError (class policy) whatever the downstream does.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from workerfleet import worker


@worker.handler("work")
async def work(job: worker.Job) -> None:
    payload: dict[str, Any] = job.payload
    await asyncio.sleep(float(payload.get("seconds", 0)))
    if payload.get("refused"):
        raise worker.PolicyError("the downstream refuses this job")
    switch = os.environ.get("FLEET_FAIL_WHILE", "")
    if switch and os.path.exists(switch):
        raise worker.TransientError("the downstream is broken")
