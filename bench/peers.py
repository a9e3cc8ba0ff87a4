"""The worker runtime next to the floors and the Python job queues teams run today, in one run.

    python -m bench.peers [--jobs 5000] [--rounds 2] [--concurrency 1,16,64] [--only NAME,...]

The same no-op job on the same local redis-server (and a RabbitMQ node), one worker process at a time,
at each concurrency, one contender after the other:
- the floors: a bare redis-py BRPOP loop, a bare XREADGROUP (COUNT = concurrency) + XACK loop, a bare
  aio-pika consumer acknowledging each message (prefetch = concurrency);
- workerfleet's runtime on a Redis list, a Redis stream and RabbitMQ;
- Celery (Redis broker, acks_late), RQ (SimpleWorker: one job at a time per process), Dramatiq (Redis
  and RabbitMQ brokers), arq and saq, each from its own virtualenv (pyproject's `bench` extras).

Per run: jobs/s from the first job's start to the last one's over a queue filled beforehand, the worker
process's CPU time per job over that window, start-up (process start to first job), its RSS; then, in a
second run, enqueue-to-start latency (p50, p99) while a producer enqueues at a steady half of that peak.
Writes bench/results/peers.json (drawn by `python -m bench.plots`) and prints the table. Floors and peers come
first in each round; rounds alternate, so a busy moment on the shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devenv.servers import RabbitMQServer, RedisServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
LATENCY_SECONDS = 2.0
"""How long the steady producer of a latency run enqueues for (at most LATENCY_JOBS jobs)."""
LATENCY_JOBS = 2_000
RUN_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    venv: str
    """The virtualenv (beside the project's .venv) whose python runs it."""
    acked_after_handler: str
    survives_sigkill: str
    floor: str | None = None
    """For workerfleet's rows: the floor its ratio is taken to."""
    concurrencies: tuple[int, ...] | None = None
    """The concurrencies it offers in one process (None: all)."""
    amqp: bool = False


CONTENDERS = (
    Contender("bare-brpop", "bare BRPOP loop", ".venv", "no (popped)", "no: the job is lost"),
    Contender(
        "bare-xreadgroup", "bare XREADGROUP+XACK loop", ".venv", "yes", "yes, if something reclaims it"
    ),
    Contender("bare-amqp", "bare AMQP consume+ack", ".venv", "yes", "yes: broker redelivers", amqp=True),
    Contender(
        "workerfleet-list",
        "workerfleet, Redis list",
        ".venv",
        "yes",
        "yes: heartbeat recovery",
        floor="bare-brpop",
    ),
    Contender(
        "workerfleet-stream",
        "workerfleet, Redis stream",
        ".venv",
        "yes",
        "yes: pending-entry reclaim",
        floor="bare-xreadgroup",
    ),
    Contender(
        "workerfleet-rabbitmq",
        "workerfleet, RabbitMQ",
        ".venv",
        "yes",
        "yes: broker redelivers",
        floor="bare-amqp",
        amqp=True,
    ),
    Contender(
        "workerfleet-list-uvloop",
        "workerfleet[speedups], Redis list",
        ".venv-bench",
        "yes",
        "yes: heartbeat recovery",
        floor="bare-brpop",
    ),
    Contender(
        "workerfleet-stream-uvloop",
        "workerfleet[speedups], Redis stream",
        ".venv-bench",
        "yes",
        "yes: pending-entry reclaim",
        floor="bare-xreadgroup",
    ),
    Contender(
        "workerfleet-rabbitmq-uvloop",
        "workerfleet[speedups], RabbitMQ",
        ".venv-bench",
        "yes",
        "yes: broker redelivers",
        floor="bare-amqp",
        amqp=True,
    ),
    Contender(
        "celery",
        "Celery 5.7 (Redis, acks_late)",
        ".venv-bench",
        "yes",
        "yes, after visibility_timeout (1 h)",
    ),
    Contender(
        "rq",
        "RQ 2.12 (SimpleWorker)",
        ".venv-bench",
        "no (dequeued at start)",
        "no: moved to failed",
        concurrencies=(1,),
    ),
    Contender("dramatiq-redis", "Dramatiq 2.2 (Redis)", ".venv-bench", "yes", "yes: heartbeat requeue"),
    Contender(
        "dramatiq-rabbitmq",
        "Dramatiq 2.2 (RabbitMQ)",
        ".venv-bench",
        "yes",
        "yes: broker redelivers",
        amqp=True,
    ),
    Contender("arq", "arq 0.28 (polls every 5 ms)", ".venv-bench-arq", "yes", "yes, after the job timeout"),
    Contender("saq", "saq 0.26", ".venv-bench", "yes", "retried once swept, if retries > 0"),
)


@dataclass(frozen=True)
class Run:
    contender: str
    concurrency: int
    jobs_per_second: float
    startup_seconds: float
    rss_mib: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    round: int = 1
    cpu_us_per_job: float | None = None
    """The worker process's CPU time (all its threads) per job over the same window as jobs/s: on a
    machine shared with other work it moves far less than jobs/s does."""


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in (0, 1]) of a non-empty sample."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


def jobs_per_second(first_start: float, last_start: float, jobs: int) -> float:
    """The rate between the first job's start and the last one's (jobs - 1 intervals)."""
    elapsed = last_start - first_start
    return (jobs - 1) / elapsed if elapsed > 0 else float("inf")


def best_runs(runs: Iterable[Run]) -> dict[tuple[str, int], Run]:
    """Per contender and concurrency, the round with the most jobs/s (the least disturbed by the machine)."""
    best: dict[tuple[str, int], Run] = {}
    for run in runs:
        key = (run.contender, run.concurrency)
        if key not in best or run.jobs_per_second > best[key].jobs_per_second:
            best[key] = run
    return best


def ratios(
    best: Mapping[tuple[str, int], Run], contenders: Sequence[Contender]
) -> dict[tuple[str, int], float]:
    """workerfleet's jobs/s over its floor's at the same concurrency, where both ran."""
    found: dict[tuple[str, int], float] = {}
    for contender in contenders:
        if contender.floor is None:
            continue
        for (name, concurrency), run in best.items():
            floor = best.get((contender.floor, concurrency))
            if name == contender.name and floor is not None and floor.jobs_per_second > 0:
                found[(name, concurrency)] = run.jobs_per_second / floor.jobs_per_second
    return found


def ratio_spread(
    runs: Iterable[Run], contenders: Sequence[Contender]
) -> dict[tuple[str, int], tuple[float, float]]:
    """workerfleet's ratio to its floor within each round (the two measured minutes apart, not hours),
    as the lowest and highest over the rounds."""
    by_round = {(run.contender, run.concurrency, run.round): run for run in runs}
    found: dict[tuple[str, int], list[float]] = {}
    for (name, concurrency, number), run in by_round.items():
        floor_name = next((c.floor for c in contenders if c.name == name), None)
        floor = by_round.get((floor_name, concurrency, number)) if floor_name else None
        if floor is not None and floor.jobs_per_second > 0:
            found.setdefault((name, concurrency), []).append(run.jobs_per_second / floor.jobs_per_second)
    return {key: (min(values), max(values)) for key, values in found.items()}


def fastest_peer(
    best: Mapping[tuple[str, int], Run], contenders: Sequence[Contender], concurrency: int
) -> Run | None:
    """The peer (not a floor, not workerfleet) with the most jobs/s at `concurrency`."""
    peers = {c.name for c in contenders if not c.name.startswith(("bare-", "workerfleet-"))}
    found = [run for (name, c), run in best.items() if name in peers and c == concurrency]
    return max(found, key=lambda run: run.jobs_per_second, default=None)


def against_peers(
    best: Mapping[tuple[str, int], Run], contenders: Sequence[Contender], concurrencies: Sequence[int]
) -> list[str]:
    """Per concurrency: the fastest peer, and each workerfleet backend's jobs/s as a multiple of it."""
    labels = {c.name: c.label for c in contenders}
    lines = []
    for concurrency in concurrencies:
        peer = fastest_peer(best, contenders, concurrency)
        if peer is None:
            continue
        ours = [
            f"{labels[name].removeprefix('workerfleet, ')} {run.jobs_per_second / peer.jobs_per_second:.2f}x"
            for (name, c), run in sorted(best.items())
            if c == concurrency and name.startswith("workerfleet-")
        ]
        lines.append(
            f"concurrency {concurrency}: fastest peer {labels[peer.contender]} "
            f"({peer.jobs_per_second:,.0f} jobs/s); workerfleet {', '.join(ours) or 'not run'}"
        )
    return lines


def _milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _whole(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def table(
    best: Mapping[tuple[str, int], Run],
    contenders: Sequence[Contender],
    concurrencies: Sequence[int],
    spread: Mapping[tuple[str, int], tuple[float, float]] | None = None,
) -> list[str]:
    """The side-by-side table as Markdown rows: one per contender and concurrency that ran. `spread`:
    the ratio's range over the rounds, shown beside it when the rounds disagree."""
    found = ratios(best, contenders)
    spread = spread or {}
    lines = [
        "| contender | conc. | jobs/s | ratio to floor | CPU µs/job | p50 ms | p99 ms | RSS MiB | start-up s "
        "| acked after handler | survives SIGKILL |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for contender in contenders:
        for concurrency in concurrencies:
            run = best.get((contender.name, concurrency))
            if run is None:
                continue
            ratio = found.get((contender.name, concurrency))
            low, high = spread.get((contender.name, concurrency), (ratio, ratio))
            ratio_text = "-" if ratio is None else f"{ratio:.2f}"
            if ratio is not None and low is not None and high is not None and low != high:
                ratio_text += f" ({low:.2f}-{high:.2f})"
            lines.append(
                f"| {contender.label} | {concurrency} | {run.jobs_per_second:,.0f} "
                f"| {ratio_text} | {_whole(run.cpu_us_per_job)} | {_milliseconds(run.p50_ms)} "
                f"| {_milliseconds(run.p99_ms)} | {run.rss_mib:.0f} | {run.startup_seconds:.2f} "
                f"| {contender.acked_after_handler} | {contender.survives_sigkill} |"
            )
    return lines


# ---- running the contenders


class Bench:
    def __init__(self, directory: Path, redis_server: RedisServer, amqp: RabbitMQServer | None) -> None:
        self._directory = directory
        self._redis = redis_server
        self._amqp = amqp
        self._runs = 0

    def _environment(self, queue: str) -> dict[str, str]:
        environment = {**os.environ, "BENCH_REDIS": self._redis.address, "BENCH_QUEUE": queue}
        environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "operator")])
        if self._amqp is not None:
            environment["BENCH_AMQP"] = self._amqp.address
        return environment

    def _command(self, contender: Contender, *arguments: str) -> list[str]:
        return [str(ROOT / contender.venv / "bin" / "python"), "-m", "bench.peer_worker", *arguments]

    def _produce(
        self, contender: Contender, queue: str, count: int, rate: float = 0.0
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self._command(contender, "produce", contender.name, "--count", str(count), "--rate", str(rate)),
            env=self._environment(queue),
            cwd=ROOT,
        )

    def _start_worker(
        self, contender: Contender, queue: str, concurrency: int, expect: int, result: Path
    ) -> subprocess.Popen[bytes]:
        log = (self._directory / f"{result.stem}.log").open("wb")
        return subprocess.Popen(
            self._command(
                contender,
                "work",
                contender.name,
                "--concurrency",
                str(concurrency),
                "--expect",
                str(expect),
                "--result",
                str(result),
            ),
            env=self._environment(queue),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _fresh(self) -> tuple[str, Path]:
        self._runs += 1
        self._redis.client().flushall()
        return f"bench-{self._runs}", self._directory / f"run-{self._runs}.json"

    def throughput(self, contender: Contender, concurrency: int, jobs: int) -> Run:
        queue, result = self._fresh()
        producer = self._produce(contender, queue, jobs)
        if producer.wait(timeout=RUN_TIMEOUT_SECONDS) != 0:
            raise RuntimeError(f"{contender.name}: the producer failed")
        spawned = time.time()
        worker = self._start_worker(contender, queue, concurrency, jobs, result)
        try:
            record = _wait_for(result, worker, contender.name)
        finally:
            _stop(worker)
        return Run(
            contender=contender.name,
            concurrency=concurrency,
            jobs_per_second=jobs_per_second(record["first_start"], record["last_start"], jobs),
            startup_seconds=record["first_start"] - spawned,
            rss_mib=record["rss_kib"] / 1024,
            cpu_us_per_job=record["cpu_seconds"] * 1e6 / (jobs - 1),
        )

    def latency(self, contender: Contender, concurrency: int, peak: float) -> tuple[float, float]:
        """p50 and p99 (ms) of enqueue-to-start while a producer enqueues at half of `peak`."""
        rate = peak / 2
        count = max(min(int(rate * LATENCY_SECONDS), LATENCY_JOBS), 20)
        queue, result = self._fresh()
        worker = self._start_worker(contender, queue, concurrency, 1 + count, result)
        try:
            warm_up = self._produce(contender, queue, 1)
            warm_up.wait(timeout=RUN_TIMEOUT_SECONDS)
            _wait_for(result.with_suffix(".ready"), worker, contender.name, parse=False)
            producer = self._produce(contender, queue, count, rate)
            producer.wait(timeout=RUN_TIMEOUT_SECONDS)
            record = _wait_for(result, worker, contender.name)
        finally:
            _stop(worker)
        latencies = [seconds * 1000 for seconds in record["latencies"][1:]]
        return percentile(latencies, 0.5), percentile(latencies, 0.99)


def _wait_for(
    path: Path, worker: subprocess.Popen[bytes], name: str, *, parse: bool = True
) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while not path.exists():
        if worker.poll() is not None:
            raise RuntimeError(f"{name}: the worker exited with {worker.returncode} before its jobs ran")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: no result within {RUN_TIMEOUT_SECONDS}s")
        time.sleep(0.02)
    return json.loads(path.read_text()) if parse else {}


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=5_000,
        help="jobs per throughput run (at 2,000 the fastest floors ran for under 60 ms: a shared "
        "machine's scheduling noise, not a rate)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds per contender; the best one counts, the ratios' range is shown",
    )
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--only", default="", help="comma-separated contender names (default: all)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    concurrencies = [int(part) for part in args.concurrency.split(",")]
    chosen = [c for c in CONTENDERS if not args.only or c.name in args.only.split(",")]
    missing = sorted({c.venv for c in chosen if not (ROOT / c.venv / "bin" / "python").exists()})
    if missing:
        print(f"missing virtualenvs {missing}: `make bench` installs them", file=sys.stderr)
        return 1
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as directory:
        redis_server = RedisServer(Path(directory) / "redis")
        amqp = RabbitMQServer(Path(directory) / "rabbitmq") if any(c.amqp for c in chosen) else None
        redis_server.start()
        try:
            if amqp is not None:
                amqp.start()
            bench = Bench(Path(directory), redis_server, amqp)
            for round_number in range(args.rounds):
                for contender in chosen:
                    for concurrency in contender.concurrencies or concurrencies:
                        if concurrency not in concurrencies:
                            continue
                        try:
                            run = bench.throughput(contender, concurrency, args.jobs)
                            p50, p99 = bench.latency(contender, concurrency, run.jobs_per_second)
                        except RuntimeError as error:  # one contender's trouble is not the bench's end
                            print(f"round {round_number + 1} {contender.name} c={concurrency}: {error}")
                            continue
                        run = Run(**{**asdict(run), "p50_ms": p50, "p99_ms": p99, "round": round_number + 1})
                        runs.append(run)
                        print(
                            f"round {round_number + 1} {contender.name:<22} c={concurrency:<3}"
                            f" {run.jobs_per_second:8,.0f} jobs/s  p50 {p50:6.1f} ms  p99 {p99:7.1f} ms"
                            f"  rss {run.rss_mib:5.0f} MiB  start {run.startup_seconds:.2f} s"
                            f"  cpu {run.cpu_us_per_job or 0:6.0f} µs/job",
                            flush=True,
                        )
        finally:
            if amqp is not None:
                amqp.stop()
            redis_server.stop()
    best = best_runs(runs)
    lines = table(best, chosen, concurrencies, ratio_spread(runs, chosen))
    print(
        f"\n{args.jobs} jobs per throughput run, best of {args.rounds} round(s); no-op handler, one process"
    )
    print("\n".join(lines))
    print("\n".join(against_peers(best, chosen, concurrencies)))
    args.results.mkdir(parents=True, exist_ok=True)
    record = {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "concurrencies": concurrencies,
        "contenders": [asdict(c) for c in chosen],
        "runs": [asdict(run) for run in runs],
        "table": lines,
    }
    (args.results / "peers.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
