"""Where the operator's memory goes: its RSS at growing pool counts, and what holds it, by source line.

Lighter than `bench.scale` (no floor, no quiet minute, no restart): for each size in `--sizes`
(cumulative: 100,300 applies 100 pools, then 200 more), the bench's pools are applied, a fresh operator
is started over them, and once every pool is Ready and `--settle` seconds have passed its RSS is read
from /proc. The slope between two sizes is the memory a pool costs; what is left at 0 pools is the
fixed part. `--tracemalloc` runs the operator under `python -X tracemalloc` and, at each size, has it
write a snapshot (on SIGUSR1, from a `sitecustomize` of the bench's own, so the operator's code knows
nothing of it) and prints the largest holders by file and by line; tracemalloc's own bookkeeping
roughly doubles the RSS then, so read the RSS from a run without it. Uses a running cluster or brings
one up; removes everything it made.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.scale import (
    DELEGABLE,
    OPERATOR_PORT_SHIFT,
    RssSampler,
    _apply,
    _cluster,
    _create_namespaces,
    _delete_namespaces,
    _pool_ready,
    _pools_manifests,
    _wait_all,
)
from devenv.cluster import PODS_PER_FAKE_NODE
from devenv.operator import OperatorProcess, install_crds
from devenv.servers import RedisServer

SNAPSHOT_SIGNAL = signal.SIGUSR1
SITECUSTOMIZE = """
import os, signal, tracemalloc
def _dump(*_):
    tracemalloc.take_snapshot().dump(os.environ["WORKERFLEET_BENCH_SNAPSHOT"])
signal.signal(signal.SIGUSR1, _dump)
"""
TOP_LINES = 25
TRACE_FRAMES = 12
SNAPSHOT_TIMEOUT_SECONDS = 120.0


def _print_top(snapshot_path: Path) -> None:
    snapshot = tracemalloc.Snapshot.load(str(snapshot_path)).filter_traces(
        [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*"),
        ]
    )
    stats = snapshot.statistics("lineno")
    print(f"    traced: {sum(stat.size for stat in stats) / 2**20:.1f} MiB in {len(stats)} lines")
    for group in ("filename", "lineno"):
        print(f"    largest by {group}:")
        for stat in snapshot.statistics(group)[:TOP_LINES]:
            frame = stat.traceback[0]
            where = frame.filename.split("site-packages/")[-1].split("/operator/")[-1]
            line = f":{frame.lineno}" if group == "lineno" else ""
            print(f"      {stat.size / 2**20:7.2f} MiB {stat.count:8d} blocks  {where}{line}")
    print("    largest by call path (innermost first):")
    for stat in snapshot.statistics("traceback")[:TOP_LINES]:
        frames = [f"{frame.filename.split('/')[-1]}:{frame.lineno}" for frame in reversed(stat.traceback)]
        print(f"      {stat.size / 2**20:7.2f} MiB {stat.count:8d} blocks  {' < '.join(frames)}")


def _snapshot(operator: OperatorProcess, path: Path) -> None:
    path.unlink(missing_ok=True)
    assert operator.pid is not None
    os.kill(operator.pid, SNAPSHOT_SIGNAL)
    deadline = time.monotonic() + SNAPSHOT_TIMEOUT_SECONDS
    size = -1
    while time.monotonic() < deadline:
        time.sleep(2)
        if path.exists() and path.stat().st_size == size:
            _print_top(path)
            return
        size = path.stat().st_size if path.exists() else -1
    raise TimeoutError(f"no tracemalloc snapshot at {path} within {SNAPSHOT_TIMEOUT_SECONDS:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,300", help="pool counts, comma-separated, growing")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after all Ready before reading")
    parser.add_argument("--tracemalloc", action="store_true", help="print the largest holders at each size")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    prefixes: list[str] = []
    with _cluster() as cluster, tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        install_crds(cluster)
        nodes = max(2, math.ceil(1.5 * max(sizes) / PODS_PER_FAKE_NODE))
        cluster.ensure_fake_nodes(nodes)
        (scratch / "redis").mkdir()
        redis = RedisServer(scratch / "redis")
        redis.start()
        snapshot_path = scratch / "operator.tracemalloc"
        if args.tracemalloc:
            (scratch / "sitecustomize.py").write_text(SITECUSTOMIZE)
            os.environ["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(scratch), os.environ.get("PYTHONPATH")])
            )
            os.environ["PYTHONTRACEMALLOC"] = str(TRACE_FRAMES)
            os.environ["WORKERFLEET_BENCH_SNAPSHOT"] = str(snapshot_path)
        try:
            applied = 0
            for size in sizes:
                prefix = f"mem{size}"
                prefixes.append(prefix)
                _create_namespaces(cluster, prefix)
                manifests = _pools_manifests(size, prefix, redis)
                job_types, pools = manifests[:10], manifests[10 + applied :]
                _apply(cluster, job_types + pools)
                operator = OperatorProcess(
                    cluster,
                    scratch / f"operator-{size}.log",
                    port_shift=OPERATOR_PORT_SHIFT,
                    extra_args=DELEGABLE,
                    register=False,
                )
                with RssSampler(operator) as rss:
                    started = time.monotonic()
                    operator.start()
                    try:
                        _wait_all(cluster, "workerpools", prefix, len(pools), _pool_ready)
                        ready = time.monotonic() - started
                        ready_kib = rss.current_kib()
                        time.sleep(args.settle)
                        print(
                            f"{size} pools: all Ready after {ready:.0f}s at {ready_kib / 1024:.1f} MiB;"
                            f" {rss.current_kib() / 1024:.1f} MiB {args.settle:.0f}s later;"
                            f" peak {rss.peak_kib / 1024:.1f} MiB",
                            flush=True,
                        )
                        if args.tracemalloc:
                            _snapshot(operator, snapshot_path)
                    finally:
                        operator.stop()
                applied = size
        finally:
            redis.stop()
            _delete_namespaces(cluster, prefixes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
