"""A demo handler for demos and canary tests: takes a set time and fails a set share of attempts.

Import it as a handler module (`workerfleet worker --handlers workerfleet.worker.demo`). Environment:

    WORKERFLEET_DEMO_JOB_TYPES        comma-separated job types it serves (default: demo)
    WORKERFLEET_DEMO_DURATION_SECONDS how long each attempt takes (default 0)
    WORKERFLEET_DEMO_FAILURE_RATE     share of attempts, 0 to 1, that fail with a TransientError (default 0)
    WORKERFLEET_DEMO_FAIL_WHILE       a path: while a file is there, every attempt fails with a
                                      TransientError (the demo breaks and mends a downstream with it)

A canary image with a higher failure rate than the stable one is what rollback tests roll back.

Two payload fields show the day-2 paths: `"ambiguous": true` asks for review (NeedsReview) until a
person approved the job; `"broken": true` fails for good (PermanentError, so it is dead-lettered) on
a job that never failed before, and succeeds once replayed from the dead letters (the fix is in).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workerfleet.worker.errors import NeedsReview, PermanentError, TransientError
from workerfleet.worker.handlers import HandlerRegistry, Job, default_registry
from workerfleet.worker.settings import ConfigurationError


@dataclass(frozen=True)
class DemoBehaviour:
    job_types: tuple[str, ...]
    duration_seconds: float
    failure_rate: float
    fail_while: Path | None = None


def _fraction(env: Mapping[str, str], name: str, default: float, *, high: float) -> float:
    text = env.get(name, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {text!r}") from None
    if not 0 <= value <= high:
        raise ConfigurationError(f"{name} must lie between 0 and {high:g}, not {value:g}")
    return value


def behaviour_from_env(env: Mapping[str, str]) -> DemoBehaviour:
    job_types = tuple(
        name.strip() for name in env.get("WORKERFLEET_DEMO_JOB_TYPES", "demo").split(",") if name.strip()
    )
    return DemoBehaviour(
        job_types=job_types,
        duration_seconds=_fraction(env, "WORKERFLEET_DEMO_DURATION_SECONDS", 0.0, high=86_400.0),
        failure_rate=_fraction(env, "WORKERFLEET_DEMO_FAILURE_RATE", 0.0, high=1.0),
        fail_while=Path(env["WORKERFLEET_DEMO_FAIL_WHILE"])
        if env.get("WORKERFLEET_DEMO_FAIL_WHILE")
        else None,
    )


def make_handler(
    behaviour: DemoBehaviour, sample: Callable[[], float] = random.random
) -> Callable[[Job], Coroutine[Any, Any, None]]:
    async def demo(job: Job) -> None:
        await asyncio.sleep(behaviour.duration_seconds)
        payload = job.payload if isinstance(job.payload, dict) else {}
        if payload.get("ambiguous") and job.approval is None:
            raise NeedsReview("demo: cannot tell from the image alone; a person decides")
        if payload.get("broken") and job.last_failure is None:
            raise PermanentError("demo: the image is broken (until the fix is in)")
        if behaviour.fail_while is not None and behaviour.fail_while.exists():
            raise TransientError("demo: the downstream is broken")
        if sample() < behaviour.failure_rate:
            raise TransientError(f"demo failure (failure rate {behaviour.failure_rate:g})")

    return demo


def register(registry: HandlerRegistry, env: Mapping[str, str]) -> DemoBehaviour:
    behaviour = behaviour_from_env(env)
    demo = make_handler(behaviour)
    for job_type in behaviour.job_types:
        registry.handler(job_type)(demo)
    return behaviour


register(default_registry, os.environ)
