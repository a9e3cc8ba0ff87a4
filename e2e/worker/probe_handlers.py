"""Handlers the integration tests run in real worker processes (`--handlers e2e.worker.probe_handlers`).

Job types `probe` and `slow-probe` (one handler; tests give them different timeouts), and
`urgent-probe`, `routine-probe` and `bulk-probe` (the same handler, for JobTypes of each
priority). The payload says what to do: {"id": "...", "sleep": seconds, "block": seconds, "gate": path,
"fail": "transient" | "permanent" | "review" | "crash", "failUnless": path};
"gate" holds the handler (at most GATE_SECONDS) until a file exists at that path, so a test can act
between the start of a job and its end;
"review" asks for review unless a person approved the job (job.approval); "failUnless" fails
permanently while no file exists at that path (a bug not fixed yet, for dead letters to replay);
"crash" kills the worker process with SIGKILL mid-job, as the OOM killer would; "block" holds the event
loop (a blocking call in an async handler, a classic bug). Every start and finish
is appended as a JSON line to $WORKERFLEET_PROBE_LOG, so a test can tell which process ran which
attempt, even for a process it killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

from workerfleet import worker

GATE_SECONDS = 60.0


def record(event: str, job: worker.Job) -> None:
    entry: dict[str, Any] = {"event": event, "id": job.id, "attempt": job.attempt, "pid": os.getpid()}
    if job.approval is not None:
        entry["approval"] = {"by": job.approval.by, "note": job.approval.note}
    line = json.dumps(entry) + "\n"
    with open(os.environ["WORKERFLEET_PROBE_LOG"], "a", encoding="utf-8") as log:
        log.write(line)


@worker.handler("bulk-probe")
@worker.handler("routine-probe")
@worker.handler("urgent-probe")
@worker.handler("slow-probe")
@worker.handler("probe")
async def probe(job: worker.Job) -> None:
    payload: dict[str, Any] = job.payload
    record("start", job)
    await asyncio.sleep(float(payload.get("sleep", 0)))
    time.sleep(float(payload.get("block", 0)))  # on purpose: a stuck event loop
    if (gate := payload.get("gate")) is not None:
        deadline = time.monotonic() + GATE_SECONDS
        while not os.path.exists(gate) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    if (fixed := payload.get("failUnless")) is not None and not os.path.exists(fixed):
        raise worker.PermanentError("probe fails until its fix is in")
    match payload.get("fail"):
        case "transient":
            raise worker.TransientError("probe asked for a transient failure")
        case "permanent":
            raise worker.PermanentError("probe asked for a permanent failure")
        case "review" if job.approval is None:
            raise worker.NeedsReview("probe cannot tell")
        case "crash":
            os.kill(os.getpid(), signal.SIGKILL)
    record("finish", job)
