"""Where a worker's time goes: workerfleet's runtime on one backend under cProfile, over a full queue.

    python -m bench.profile_worker [--backend list|stream|rabbitmq] [--concurrency 16] [--jobs 5000]

Fills the queue (as `bench.peers` does), runs the same worker process under cProfile until every job
has started, then prints its time by part (waiting on the server, the event loop, the queue client, the
log line, the runtime itself, ...) and the functions with the most time of their own. Start-up imports
are counted apart, so the parts are those of consuming.
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from devenv.servers import RabbitMQServer, RedisServer

ROOT = Path(__file__).resolve().parent.parent
PARTS = (  # first match wins: the queue clients' own asyncio modules count as the client
    ("waiting on the server (epoll)", ("select.epoll", "selectors.py")),
    ("start-up imports", ("<frozen importlib", "marshal", "builtins.compile", "builtins.exec", "_imp")),
    ("Redis client (redis-py)", ("/redis/",)),
    ("AMQP client (aio-pika, aiormq, pamqp)", ("/aio_pika/", "/aiormq/", "/pamqp/")),
    ("per-job log line (logging, JSON)", ("logging/", "jsonlog.py", "json/", "_json")),
    ("envelope decode (pydantic)", ("pydantic", "envelope.py")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("asyncio event loop, tasks, futures", ("asyncio/", "_contextvars", "_asyncio")),
    ("socket writes and reads", ("_socket", "ssl")),
    ("workerfleet runtime and backend", ("workerfleet/",)),
)


def part_of(location: str) -> str:
    """The part a profiled function belongs to, by its file and name (`file:line(function)`)."""
    for part, markers in PARTS:
        if any(marker in location for marker in markers):
            return part
    return "other (builtins called from all of these)"


def parts(stats: pstats.Stats) -> Counter[str]:
    """Own time (s) by part."""
    found: Counter[str] = Counter()
    for (filename, line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        found[part_of(f"{filename}:{line}({function})")] += row[2]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["list", "stream", "rabbitmq"], default="list")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    contender = f"workerfleet-{args.backend}"
    with tempfile.TemporaryDirectory() as directory:
        redis_server = RedisServer(Path(directory) / "redis")
        amqp = RabbitMQServer(Path(directory) / "rabbitmq") if args.backend == "rabbitmq" else None
        redis_server.start()
        try:
            if amqp is not None:
                amqp.start()
            environment = {
                **os.environ,
                "BENCH_REDIS": redis_server.address,
                "BENCH_QUEUE": "profiled",
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator")]),
            }
            if amqp is not None:
                environment["BENCH_AMQP"] = amqp.address
            python = [sys.executable, "-m"]
            subprocess.run(
                [*python, "bench.peer_worker", "produce", contender, "--count", str(args.jobs)],
                env=environment,
                cwd=ROOT,
                check=True,
            )
            profile = Path(directory) / "worker.prof"
            subprocess.run(
                [
                    *python,
                    "cProfile",
                    "-o",
                    str(profile),
                    "-m",
                    "bench.peer_worker",
                    "work",
                    contender,
                    "--concurrency",
                    str(args.concurrency),
                    "--expect",
                    str(args.jobs),
                    "--result",
                    str(Path(directory) / "result.json"),
                ],
                env=environment,
                cwd=ROOT,
                check=True,
                timeout=600,
            )
            stats = pstats.Stats(str(profile))
        finally:
            if amqp is not None:
                amqp.stop()
            redis_server.stop()
    found = parts(stats)
    consuming = sum(seconds for part, seconds in found.items() if part != "start-up imports")
    print(f"{contender}, concurrency {args.concurrency}, {args.jobs} jobs, under cProfile")
    print(f"{'part':<44} {'seconds':>8} {'of consuming':>13} {'µs per job':>11}")
    for part, seconds in found.most_common():
        share = "" if part == "start-up imports" else f"{seconds / consuming:12.0%}"
        print(f"{part:<44} {seconds:8.2f} {share:>13} {seconds / args.jobs * 1e6:11.0f}")
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
