"""The loss checker, full profile: per backend (Redis list, Redis stream, RabbitMQ), 5,000 jobs through
an autoscaled pool of real worker processes while workers are SIGKILLed every few seconds, the queue
server restarts once and a JobType change rolls the workers; then every job id is accounted for, and
each of the hostile messages mixed in (three of every kind in devenv/hostile.py) must be dead-lettered
with its kind's reason.

    python -m bench.loss [--profile full|short] [--seed N] [--backend redis-list ...]

Prints the schedule (seed included: `--seed` or WORKERFLEET_LOSS_SEED replays it) and a table per
backend, and writes bench/results/loss.json. Exits 1 when a job was lost or stranded, ended twice, a
keyed job's effect was applied twice, or a hostile message ended anywhere but dead-lettered with its
reason. Run with `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devenv import chart
from devenv.cluster import Cluster
from devenv.loss.plan import PROFILES, schedule, table
from devenv.loss.run import BACKENDS, LossRun, Target, rabbitmq_target, redis_target
from devenv.operator import install_crds, operator_as_chart_identity
from devenv.servers import RabbitMQServer, RedisServer

RESULTS = Path(__file__).parent / "results" / "loss.json"
SEED_ENV = "WORKERFLEET_LOSS_SEED"


def _target(backend: str, stack: ExitStack, directory: Path) -> Target:
    if backend == "rabbitmq":
        rabbitmq = RabbitMQServer(directory / "rabbitmq")
        rabbitmq.start()
        stack.callback(rabbitmq.stop)
        store = RedisServer(directory / "idempotency-store", durable=True)
        store.start()
        stack.callback(store.stop)
        return rabbitmq_target(rabbitmq, store)
    server = RedisServer(directory / backend, durable=True)
    server.start()
    stack.callback(server.stop)
    return redis_target(backend, server)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--seed", type=int, default=int(os.environ.get(SEED_ENV) or 0) or None)
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="repeatable; default: all")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    seed = args.seed or random.SystemRandom().randrange(1, 1_000_000)
    print(f"loss checker, {profile.name} profile, seed {seed} (replay: --seed {seed})", flush=True)
    cluster = Cluster()
    started_here = not cluster.is_ready()
    if started_here:
        cluster.up()
    rows: list[dict[str, Any]] = []
    failed = False
    try:
        with ExitStack() as stack:
            # Kept after the run (ledger, worker logs, server logs), to read what happened to a job id
            directory = cluster.layout.logs / f"loss-{profile.name}-{seed}-{int(time.time())}"
            print(f"ledger and logs in {directory}", flush=True)
            install_crds(cluster)
            chart.install(cluster, chart.E2E_VALUES)
            stack.callback(chart.uninstall, cluster)
            stack.enter_context(
                operator_as_chart_identity(cluster, cluster.layout.logs / "operator-loss.log")
            )
            for backend in args.backend or BACKENDS:
                namespace = f"loss-{uuid.uuid4().hex[:6]}"
                cluster.kubectl("create", "namespace", namespace)
                try:
                    target = _target(backend, stack, directory)
                    run = LossRun(
                        cluster,
                        namespace,
                        target,
                        schedule(seed, profile),
                        profile,
                        directory / backend,
                        sys.stdout,
                    )
                    began = time.monotonic()
                    result = run.run()
                    row = {**result.row(), "run_seconds": round(time.monotonic() - began, 1)}
                    rows.append(row)
                    print(table([row]), flush=True)
                    for problem in result.problems():
                        print(f"  FAILED {problem}", flush=True)
                    for finding in result.reported():
                        print(f"  at-least-once {finding}", flush=True)
                    failed = failed or not result.ok
                finally:
                    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    finally:
        if started_here:
            cluster.down()
    print(f"\nloss checker, {profile.name} profile, seed {seed}:\n{table(rows)}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "measured": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}",
                "profile": profile.name,
                "seed": seed,
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results in {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
