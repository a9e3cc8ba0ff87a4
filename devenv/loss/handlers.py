"""The loss checker's handlers, run by real `workerfleet worker` processes (`WORKERFLEET_HANDLERS`).

Every invocation appends to the ledger, a file outside the queue (WORKERFLEET_LOSS_LEDGER), opened
O_APPEND and fsynced after each line, so a record written is a record kept whatever kills the worker
next. A job's payload says what its handler does (see `plan.Kind`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from devenv.loss.plan import KEYED_TYPE, PLAIN_TYPE, Event, Kind, Record
from workerfleet.worker.errors import NeedsReview, TransientError
from workerfleet.worker.handlers import Job, default_registry

LEDGER_ENV = "WORKERFLEET_LOSS_LEDGER"


def append(path: str, record: Record) -> None:
    """One line, appended and fsynced (lines this short are written in one piece)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, (record.line() + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _note(event: Event, job: Job) -> None:
    append(os.environ[LEDGER_ENV], Record(event, time.time(), os.getpid(), job.id, job.attempt))


async def run(job: Job) -> None:
    _note(Event.START, job)
    kind = Kind(job.payload["kind"])
    await asyncio.sleep(float(job.payload.get("seconds", 0.0)))
    if kind is Kind.POISON:
        _note(Event.SELF_KILLED, job)
        os.kill(os.getpid(), signal.SIGKILL)
    if kind is Kind.REVIEW:
        raise NeedsReview("the loss checker asks for review")
    if job.attempt <= int(job.payload.get("failTimes", 0)):
        raise TransientError(f"scheduled failure at attempt {job.attempt}")
    _note(Event.EFFECT, job)


default_registry.handler(PLAIN_TYPE)(run)
default_registry.handler(KEYED_TYPE)(run)
