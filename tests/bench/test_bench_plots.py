"""`python -m bench.plots`: bench results drawn by the report renderer (no cluster needed)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from bench import plots

SVG = "{http://www.w3.org/2000/svg}"
COMMITTED = Path(plots.__file__).parent / "results"

AUTOSCALING = {
    "backlog": 400,
    "target_per_replica": 50,
    "polling_seconds": 1,
    "hpa_sync_period": "5s",
    "rounds": [
        {
            "activation_seconds": 1.2,
            "scale_up_seconds": 7.5,
            "timeline": [[0, 0, 0], [0.2, 400, 0], [1.2, 400, 1], [7.5, 380, 8]],
        },
        {
            "activation_seconds": 0.8,
            "scale_up_seconds": 6.1,
            "timeline": [[0, 0, 0], [0.8, 400, 1], [6.1, 390, 8]],
        },
    ],
}
ROLLBACK = {
    "runs": [
        {"rollback_latency_seconds": 4.1, "interval_seconds": 5, "ratio": 0.82},
        {"rollback_latency_seconds": 5.6, "interval_seconds": 5, "ratio": 1.12},
    ]
}


def _groups(svg: ET.Element, kind: str, attribute: str) -> list[str | None]:
    return [g.get(attribute) for g in svg.iter(f"{SVG}g") if g.get("class") == kind]


def test_every_result_is_drawn_on_one_page_and_scale_also_as_svg(tmp_path: Path) -> None:
    shutil.copy(COMMITTED / "scale.json", tmp_path / "scale.json")
    (tmp_path / "autoscaling-reaction.json").write_text(json.dumps(AUTOSCALING))
    (tmp_path / "rollback-latency.json").write_text(json.dumps(ROLLBACK))

    assert plots.main(["--results", str(tmp_path)]) == 0

    page = ET.fromstring((tmp_path / "report.html").read_text().removeprefix("<!DOCTYPE html>\n"))
    charts = list(page.iter(f"{SVG}svg"))
    assert len(charts) == 3
    autoscaling, rollback, scale = charts
    assert _groups(autoscaling, "panel", "data-title") == ["Queue depth", "Replicas"]
    assert _groups(autoscaling, "series", "data-name") == ["round 1", "round 2"] * 2
    # The fastest round's activation and scale-up are marked where they happened
    assert [
        (g.get("data-label"), g.get("data-at"))
        for g in autoscaling.iter(f"{SVG}g")
        if g.get("class") == "marker"
    ] == [
        ("Activated", "0.8"),
        ("ScaledUp", "6.1"),
    ]
    assert _groups(rollback, "series", "data-name") == ["rollback latency", "analysis interval", "ratio"]
    assert _groups(scale, "series", "data-points") == ["3"] * 5
    svg = ET.fromstring((tmp_path / "scale.svg").read_text())
    assert _groups(svg, "panel", "data-title") == ["Time to all Ready", "Operator memory"]


def test_missing_results_are_skipped_and_none_at_all_is_an_error(tmp_path: Path) -> None:
    assert plots.main(["--results", str(tmp_path)]) == 1
    (tmp_path / "rollback-latency.json").write_text(json.dumps(ROLLBACK))
    assert list(plots.charts(tmp_path)) == ["rollback-latency.json"]


def test_peers_results_are_drawn_as_jobs_per_second_and_latency_against_concurrency(tmp_path: Path) -> None:
    contenders = [
        {"name": "bare-brpop", "label": "bare BRPOP loop"},
        {"name": "workerfleet-list", "label": "workerfleet, Redis list"},
    ]
    runs = [
        {"contender": name, "concurrency": c, "jobs_per_second": rate, "p99_ms": 5.0}
        for name, c, rate in [
            ("bare-brpop", 1, 9000.0),
            ("bare-brpop", 16, 9500.0),
            ("workerfleet-list", 1, 3000.0),
            ("workerfleet-list", 16, 8000.0),
            ("workerfleet-list", 16, 7000.0),  # a slower round: the best one is drawn
        ]
    ]
    (tmp_path / "peers.json").write_text(json.dumps({"jobs": 2000, "contenders": contenders, "runs": runs}))

    assert plots.main(["--results", str(tmp_path)]) == 0

    chart = ET.fromstring((tmp_path / "peers.svg").read_text())
    assert _groups(chart, "panel", "data-title") == [
        "Jobs per second",
        "p99 enqueue-to-start at half the peak",
    ]
    assert _groups(chart, "series", "data-name") == ["bare BRPOP loop", "workerfleet, Redis list"] * 2
    drawn = plots.peers_chart(json.loads((tmp_path / "peers.json").read_text()))
    assert list(drawn.panels[0].series[1].points) == [(1, 3000.0), (16, 8000.0)]
