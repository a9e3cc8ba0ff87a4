"""Rollback latency of a bad canary: from Prometheus first showing the canary's error rate above
maxErrorRate (with minSamples jobs) to the canary Deployment at zero replicas, as a ratio to the
analysis interval.

Runs the bad-canary e2e test (real cluster, Redis, Prometheus and worker processes) `--runs` times;
the test records each measurement in the cluster's log folder. Run with `make bench`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from devenv.cluster import Cluster

RESULTS = Path(__file__).resolve().parent / "results"
TEST = "e2e/test_canary.py::test_a_bad_canary_is_rolled_back_within_one_analysis_interval"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cluster = Cluster()
    started_here = not cluster.is_ready()
    if started_here:
        cluster.up()  # the test then leaves it running, and with it the record it writes
    record = cluster.layout.logs / "rollback-latency.json"
    ratios, seconds, runs = [], [], []
    try:
        for run in range(args.runs):
            record.unlink(missing_ok=True)
            subprocess.run([sys.executable, "-m", "pytest", "-q", TEST], check=True, timeout=600)
            measured = json.loads(record.read_text())
            runs.append(measured)
            ratios.append(measured["ratio"])
            seconds.append(measured["rollback_latency_seconds"])
            latency, interval = measured["rollback_latency_seconds"], measured["interval_seconds"]
            print(f"run {run + 1}: {latency:.2f}s, interval {interval}s")
    finally:
        if started_here:
            cluster.down()
    print(
        f"rollback latency: median {statistics.median(seconds):.2f}s, max {max(seconds):.2f}s;"
        f" median {statistics.median(ratios):.2f} x the analysis interval, max {max(ratios):.2f} x"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rollback-latency.json").write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"wrote {RESULTS / 'rollback-latency.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
