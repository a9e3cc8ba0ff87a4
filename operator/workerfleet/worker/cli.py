"""`workerfleet worker`: the entry point of worker containers. Settings come from the environment the
operator sets (see `workerfleet.worker.settings`); a few flags override them for local runs."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
from typing import TYPE_CHECKING

from workerfleet.api.worker_contract import WorkerEnv
from workerfleet.worker import event_loop
from workerfleet.worker.settings import ConfigurationError

if TYPE_CHECKING:
    from workerfleet.worker.rate_limit import Pacer
    from workerfleet.worker.runtime import Runtime

log = logging.getLogger("workerfleet.worker")

EXIT_CONFIGURATION_ERROR = 2
MAINTENANCE_PER_HEARTBEAT = 3
"""Upkeep runs this many times per heartbeat interval, so one late beat never looks like a dead worker."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--handlers",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module, which registers handlers (repeatable; adds to WORKERFLEET_HANDLERS)",
    )
    parser.add_argument("--concurrency", type=int, help="jobs at once (overrides WORKERFLEET_CONCURRENCY)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="port of /metrics, /healthz and /readyz (overrides WORKERFLEET_METRICS_PORT)",
    )


def _environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    modules = [module for module in env.get(WorkerEnv.HANDLERS, "").split(",") if module.strip()]
    env[WorkerEnv.HANDLERS] = ",".join([*modules, *args.handlers])
    if args.concurrency is not None:
        env[WorkerEnv.CONCURRENCY] = str(args.concurrency)
    if args.metrics_port is not None:
        env[WorkerEnv.METRICS_PORT] = str(args.metrics_port)
    return env


def _import_handlers(modules: tuple[str, ...]) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigurationError(f"cannot import handler module {module!r}: {error}") from None


async def _serve(runtime: Runtime, pacer: Pacer | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop(signal_name: str) -> None:
        if not stop.is_set():
            log.info("stop requested; draining", extra={"signal": signal_name})
        stop.set()

    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, request_stop, signal_number.name)
    try:
        await runtime.run(stop)
    finally:
        if pacer is not None:
            await pacer.close()


def run(args: argparse.Namespace) -> int:
    """Consume until SIGTERM or SIGINT, drain, exit 0; exit 2 when the configuration is unusable."""
    # Imported here, not at the top: `workerfleet run` (the operator) parses the same command line and
    # needs none of the worker's queue clients (about 13 MiB of its memory).
    from workerfleet.api.worker_contract import BREAKER_FILE  # noqa: PLC0415
    from workerfleet.worker import health as probes  # noqa: PLC0415
    from workerfleet.worker import jsonlog  # noqa: PLC0415
    from workerfleet.worker.backend_factory import (  # noqa: PLC0415
        keys_per_process,
        open_backend,
        open_pacer,
        pool_dead_letter_queue,
    )
    from workerfleet.worker.breaker import BreakerGate  # noqa: PLC0415
    from workerfleet.worker.handlers import default_registry  # noqa: PLC0415
    from workerfleet.worker.metrics import WorkerMetrics  # noqa: PLC0415
    from workerfleet.worker.runtime import Runtime  # noqa: PLC0415
    from workerfleet.worker.settings import (  # noqa: PLC0415
        effective_drain_seconds,
        load_policies,
        settings_from_env,
    )

    jsonlog.configure("INFO")  # until the settings (and their log level) are known
    try:
        settings = settings_from_env(_environment(args))
        jsonlog.configure(settings.log_level)
        policies = load_policies(settings.policies_path)
        _import_handlers(settings.handler_modules)
        backend = open_backend(settings, policies)
        pacer = open_pacer(settings, policies)
        metrics = WorkerMetrics(settings.pool, settings.revision, policies)
        health = probes.Health(settings.stall_seconds)
        handlers = default_registry.handlers()
        runtime = Runtime(
            backend=backend,
            policies=policies,
            handlers=handlers,
            metrics=metrics,
            health=health,
            pool=settings.pool,
            revision=settings.revision,
            worker_id=settings.worker_id,
            concurrency=settings.concurrency,
            drain_seconds=effective_drain_seconds(settings, policies),
            pool_dead_letter_queue=pool_dead_letter_queue(settings),
            maintenance_interval_seconds=settings.heartbeat_seconds / MAINTENANCE_PER_HEARTBEAT,
            limits=settings.limits,
            breaker=BreakerGate(settings.policies_path.parent / BREAKER_FILE),
            pacer=pacer,
        )
    except ConfigurationError as error:
        log.error("cannot start the worker", extra={"error": str(error)})
        return EXIT_CONFIGURATION_ERROR
    unserved = sorted(set(policies) - set(handlers))
    if unserved:
        log.warning(
            "no handler for some job types; their jobs are dead-lettered", extra={"job_types": unserved}
        )
    per_process = keys_per_process(settings, policies)
    if per_process:
        log.warning(
            "queue.rabbitmq names no idempotencyStore: these job types' keys are checked and claimed per "
            "worker process only, so a job redelivered to another worker runs again, and two copies "
            "delivered at once to two workers both run",
            extra={"job_types": per_process},
        )
    try:
        probes.serve(settings.metrics_address, settings.metrics_port, metrics.registry, health)
    except OSError as error:
        log.error(
            "cannot serve metrics and probes", extra={"port": settings.metrics_port, "error": str(error)}
        )
        return EXIT_CONFIGURATION_ERROR
    log.info(
        "worker starting",
        extra={
            "pool": settings.pool,
            "revision": settings.revision,
            "worker_id": settings.worker_id,
            "job_types": sorted(set(policies) & set(handlers)),
            "metrics_port": settings.metrics_port,
            "event_loop": event_loop.loop_name(),
        },
    )
    event_loop.run(_serve(runtime, pacer))
    return 0
