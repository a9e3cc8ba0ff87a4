"""`make bench`'s results as pictures, drawn by the demo report's renderer (`workerfleet.report`).

    python -m bench.plots [--results bench/results]

Reads whichever of these the bench has written and draws each:
- `autoscaling-reaction.json`: queue depth and replicas against time since the backlog was pushed,
  one line per round, with the activation and scale-up of the fastest round marked;
- `rollback-latency.json`: each run's rollback latency next to the analysis interval;
- `scale.json`: time to all Ready and the operator's memory against the number of pools;
- `peers.json`: jobs/s and p99 enqueue-to-start latency of the worker runtime, the floors and the peer
  job queues against concurrency (the best round of each).

Writes `report.html` (every chart on one self-contained page), `scale.svg` and `peers.svg` (for the
README).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from workerfleet.report import Chart, Marker, Page, Panel, Series, XFormat, render_html, render_svg

RESULTS = Path(__file__).resolve().parent / "results"


def autoscaling_chart(record: dict[str, Any]) -> Chart:
    rounds = record["rounds"]
    fastest = min(rounds, key=lambda r: r["scale_up_seconds"])
    number = rounds.index(fastest) + 1
    markers = [
        Marker(fastest["activation_seconds"], "Activated", f"round {number}: first replica"),
        Marker(
            fastest["scale_up_seconds"],
            "ScaledUp",
            f"round {number}: {record['backlog'] // record['target_per_replica']} replicas",
        ),
    ]
    depth = [
        Series(f"round {n}", [(t, d) for t, d, _ in r["timeline"]]) for n, r in enumerate(rounds, start=1)
    ]
    replicas = [
        Series(f"round {n}", [(t, replicas) for t, _, replicas in r["timeline"]], step=True)
        for n, r in enumerate(rounds, start=1)
    ]
    return Chart(
        f"Autoscaling reaction: {record['backlog']} jobs pushed onto an idle pool,"
        f" {record['target_per_replica']} per replica, polling {record['polling_seconds']}s,"
        f" HPA sync {record['hpa_sync_period']}",
        [Panel("Queue depth", depth, unit="jobs"), Panel("Replicas", replicas)],
        markers,
        x_label="time since the backlog was pushed",
    )


def rollback_chart(record: dict[str, Any]) -> Chart:
    runs = record["runs"]
    return Chart(
        "Rollback latency of a bad canary: Prometheus shows it failing -> canary at zero",
        [
            Panel(
                "Latency",
                [
                    Series(
                        "rollback latency",
                        [(n, r["rollback_latency_seconds"]) for n, r in enumerate(runs, 1)],
                    ),
                    Series("analysis interval", [(n, r["interval_seconds"]) for n, r in enumerate(runs, 1)]),
                ],
                unit="s",
            ),
            Panel(
                "Ratio to the interval", [Series("ratio", [(n, r["ratio"]) for n, r in enumerate(runs, 1)])]
            ),
        ],
        x_label="run",
        x_format=XFormat.NUMBER,
    )


def scale_chart(record: dict[str, Any]) -> Chart:
    sizes = record["sizes"]

    def series(name: str, key: str) -> Series:
        return Series(name, [(size["pools"], size[key]) for size in sizes])

    return Chart(
        "Operator at scale",
        [
            Panel(
                "Time to all Ready",
                [
                    series("raw children (floor)", "floor_seconds"),
                    series("operator, cold start", "cold_seconds"),
                    series("operator, applied live", "live_seconds"),
                ],
                unit="s",
            ),
            Panel(
                "Operator memory",
                [series("peak RSS", "peak_rss_mib"), series("settled RSS", "settled_rss_mib")],
                unit="MiB",
            ),
        ],
        x_label="pools",
        x_format=XFormat.NUMBER,
        width=720,
    )


def peers_chart(record: dict[str, Any]) -> Chart:
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for run in record["runs"]:
        key = (run["contender"], run["concurrency"])
        if key not in best or run["jobs_per_second"] > best[key]["jobs_per_second"]:
            best[key] = run

    def series(key: str) -> list[Series]:
        return [
            Series(
                contender["label"],
                sorted(
                    (concurrency, run[key])
                    for (name, concurrency), run in best.items()
                    if name == contender["name"] and run[key] is not None
                ),
            )
            for contender in record["contenders"]
            if any(name == contender["name"] for name, _ in best)
        ]

    return Chart(
        f"Worker throughput, one process, no-op job ({record['jobs']} jobs per run)",
        [
            Panel("Jobs per second", series("jobs_per_second"), unit="jobs/s", y_format="{:,.0f}"),
            Panel("p99 enqueue-to-start at half the peak", series("p99_ms"), unit="ms"),
        ],
        x_label="concurrency",
        x_format=XFormat.NUMBER,
        width=960,
    )


DRAWN = {
    "autoscaling-reaction.json": autoscaling_chart,
    "rollback-latency.json": rollback_chart,
    "scale.json": scale_chart,
    "peers.json": peers_chart,
}


def charts(results: Path) -> dict[str, Chart]:
    """The chart of each result file present, by file name."""
    return {
        name: draw(json.loads((results / name).read_text()))
        for name, draw in DRAWN.items()
        if (results / name).exists()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    drawn = charts(args.results)
    if not drawn:
        print(f"no bench results in {args.results}", file=sys.stderr)
        return 1
    if "scale.json" in drawn:
        (args.results / "scale.svg").write_text(render_svg(drawn["scale.json"]) + "\n")
    if "peers.json" in drawn:
        (args.results / "peers.svg").write_text(render_svg(drawn["peers.json"]) + "\n")
    page = Page("workerfleet bench results", list(drawn.values()), [f"from {', '.join(drawn)}"])
    (args.results / "report.html").write_text(render_html(page))
    print(f"wrote {args.results / 'report.html'} ({', '.join(drawn)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
