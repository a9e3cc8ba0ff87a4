"""`make demo`'s scenario, shortened, against the session's operator: so the demo cannot rot."""

from __future__ import annotations

import io
import json
import re
import time
import urllib.error
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from devenv import chart, demo
from devenv.cluster import Cluster
from devenv.prometheus import PrometheusServer

DASHBOARD = chart.CHART / "dashboards" / "workerfleet.json"
ALERT_SECONDS = 60.0
SVG = "{http://www.w3.org/2000/svg}"

SHORT = demo.Timing(
    jobs=150,
    job_seconds=0.2,
    target_per_replica=20,
    max_replicas=4,
    cooldown_seconds=5,
    scale_timeout_seconds=180,
    show_every_seconds=2,
    steady_replicas=4,
    steady_jobs_per_second=8,
    analysis_interval_seconds=5,
    analysis_min_samples=10,
    breaker_cool_down_seconds=3,
)


@pytest.fixture
def demo_namespace(operator: Cluster) -> Iterator[Cluster]:
    """The demo's namespace, removed afterwards (the demo itself leaves it for the user to poke at)."""
    yield operator
    operator.kubectl("delete", "namespace", demo.NAMESPACE, "--wait=false", check=False)


def _legend(legend_format: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), "<missing>"), legend_format)


class ChartQueries:
    """A last step of the demo: the chart's dashboard and alerts, run against the demo's Prometheus."""

    def __init__(self) -> None:
        self.wrong: list[str] = []
        self.panels_with_data: list[str] = []
        self.firing: list[dict[str, str]] = []
        self.alert_seconds = 0.0
        self.seconds = 0.0

    def __call__(self, shown: demo.Demo) -> None:
        prometheus = shown.prometheus
        assert prometheus is not None
        began = time.monotonic()
        start, end = shown._started.timestamp(), time.time()
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            problems = [
                problem
                for target in panel.get("targets", [])
                for problem in self._target(prometheus, target, start, end)
            ]
            self.wrong += [f"panel {panel['title']!r}: {problem}" for problem in problems]
            if not problems:
                self.panels_with_data.append(panel["title"])
        groups = yaml.safe_load((shown.directory / "alerts.yml").read_text())["groups"]
        for rule in (rule for group in groups for rule in group["rules"]):
            if error := prometheus.parse_error(rule["expr"]):
                self.wrong.append(f"alert {rule['alert']}: {rule['expr']} does not parse: {error}")
        self._degraded_alert(prometheus)
        self.seconds = time.monotonic() - began

    @staticmethod
    def _target(prometheus: PrometheusServer, target: dict[str, str], start: float, end: float) -> list[str]:
        """What is wrong with one query of a panel, drawn over the demo as Grafana would."""
        expr, legend_format = target["expr"], target.get("legendFormat", "")
        if error := prometheus.parse_error(expr):
            return [f"{expr} does not parse: {error}"]
        series = prometheus.query_range(expr, start, end, 2)
        if not series:
            return [f"{expr} returns no data over the demo"]
        legends = [_legend(legend_format, s["metric"]) for s in series]
        renamed = sorted({label for s in series for label in s["metric"] if label.startswith("exported_")})
        if renamed:
            namespaces = sorted({s["metric"].get("namespace", "") for s in series})
            return [
                f"the scrape's target labels displaced the series' own {renamed} (namespace: {namespaces})"
            ]
        if any("<missing>" in legend for legend in legends):
            return [f"legend {legend_format} names a label the series lack: {[s['metric'] for s in series]}"]
        if len(set(legends)) < len(legends):
            return [f"the legend cannot tell its series apart: {legends}"]
        return []

    def _degraded_alert(self, prometheus: PrometheusServer) -> None:
        """The pool is Degraded since the rollback: its alert fires, for the pool's namespace."""
        waited = time.monotonic()
        while time.monotonic() - waited < ALERT_SECONDS:
            self.firing = [
                alert["labels"]
                for alert in prometheus.alerts()
                if alert["state"] == "firing" and alert["labels"]["alertname"] == "WorkerfleetPoolDegraded"
            ]
            if self.firing:
                break
            time.sleep(1)
        self.alert_seconds = time.monotonic() - waited
        if not self.firing:
            self.wrong.append(
                f"WorkerfleetPoolDegraded not firing {self.alert_seconds:.0f}s after the rollback"
            )
        elif {(a.get("namespace"), a.get("pool")) for a in self.firing} != {(demo.NAMESPACE, demo.POOL)}:
            self.wrong.append(
                f"WorkerfleetPoolDegraded fires for another pool than the demo's: {self.firing}"
            )


def _review_and_replay_shown(text: str) -> None:
    """The jobs asking for review are listed, two approved and one rejected; the broken ones are
    replayed (after a dry run naming them) and run, and the rejected one stays a dead letter."""
    _, review = text.split("$ kubectl workerfleet review ls")
    assert all(
        re.search(rf"{image}\s+{demo.JOB_TYPE}\s+\S+\s+1\s+NeedsReview", review) for image in demo.REVIEWED
    )
    assert "approved ambiguous-1.jpg" in review, review
    assert "rejected ambiguous-3.jpg" in review, review
    _, replay = text.split("$ kubectl workerfleet dlq replay", 1)
    assert {f"would replay {image}" for image in demo.BROKEN} <= {
        " ".join(line.split()[:3]) for line in replay.splitlines()
    }, replay
    assert re.search(r"2 replayed, \d+ skipped, 0 gone meanwhile", replay), replay
    assert re.search(r"the dead letters hold \[.*'ambiguous-3.jpg'.*\]", text), text


def _breaker_shown(text: str, notes: list[str]) -> None:
    tripped = re.search(r"event Warning\s+CircuitTripped\s+transient failures: ([\d.]+)% of \d+ jobs", text)
    assert tripped is not None, text
    assert float(tripped.group(1)) >= 50, text
    assert re.search(r"opened [\d.]+s after the downstream broke: CircuitOpen=True \(CircuitTripped\)", text)
    assert re.search(r"event Normal\s+CircuitClosed\s+probe passed", text), text
    assert "Dead-lettered while open: 0" in text, text
    assert any(note.startswith("Circuit breaker (") for note in notes), notes
    took = re.search(r"the breaker took \d+s of the demo", text)
    assert took is not None, text
    print(took.group(0))


def test_the_demo_scales_rolls_a_bad_revision_back_and_reviews_and_replays(
    demo_namespace: Cluster, tmp_path: Path
) -> None:
    out = io.StringIO()
    shown = demo.Demo(demo_namespace, tmp_path, SHORT, out)
    shown.report = tmp_path / "demo-report.html"
    queries = ChartQueries()

    # The cluster and the operator (helm install, ServiceAccount token) are the session's, set up by
    # the same functions the demo's first steps call.
    demo.run(
        shown,
        [
            demo.start_servers,
            demo.apply_pool,
            demo.burst_and_scale,
            demo.bad_revision_rolls_back,
            demo.review_and_replay,
            demo.breaker_trips_and_closes,
            queries,
        ],
    )

    print(f"chart queries and the Degraded alert checked in {queries.seconds:.1f}s")
    # Every dashboard panel draws the run, every rule parses, and the Degraded pool's alert fires
    # with the pool's own namespace (not the operator's)
    assert queries.wrong == [], "\n".join(queries.wrong)
    assert len(queries.panels_with_data) == len(json.loads(DASHBOARD.read_text())["panels"])
    assert [(a["namespace"], a["pool"]) for a in queries.firing] == [(demo.NAMESPACE, demo.POOL)]

    text = out.getvalue()
    assert "READY   REPLICAS" in text, text
    assert re.search(r"event Normal\s+Activated", text), text
    assert re.search(r"event Normal\s+Deactivated", text), text
    peak = int(re.search(r"the pool peaked at (\d+) replicas", text).group(1))  # type: ignore[union-attr]
    assert 1 < peak <= SHORT.max_replicas
    handled = re.search(r"jobs by outcome (\{.*\})", text)
    assert handled is not None, text
    assert "succeeded" in handled.group(1), text
    # The bad revision started as a canary and was rolled back by the analysis, with the numbers
    assert re.search(r"event Normal\s+RolloutStarted", text), text
    rolled_back = re.search(r"event Warning\s+RolledBack\s+(.*)", text)
    assert rolled_back is not None, text
    assert re.search(r"canary error rate [\d.]+% over \d+ jobs", rolled_back.group(1)), text
    assert re.search(r"every worker runs the stable revision \S+ again \(unchanged\)", text), text
    assert "Degraded=True (RolloutFailed)" in text, text
    canary = demo_namespace.kubectl(
        "get", "deployment", f"{demo.POOL}-canary", "-n", demo.NAMESPACE, "-o", "jsonpath={.spec.replicas}"
    )
    assert canary.stdout == "0"
    _, plugin_output = text.split("$ kubectl workerfleet status")
    assert "Degraded" in plugin_output, plugin_output
    _review_and_replay_shown(text)
    _breaker_shown(text, shown.notes)
    assert "Stop it" in text
    # The picture of the run: each series drawn, and a marker for each of these Events that happened
    page = ET.fromstring(shown.report.read_text().removeprefix("<!DOCTYPE html>\n"))  # noqa: S314  (ours)
    drawn = {
        g.get("data-name"): int(g.get("data-points") or 0) for g in page.iter(f"{SVG}g") if g.get("data-name")
    }
    assert set(drawn) == {"queue depth", "desired", "ready", "stable error rate", "canary error rate"}, drawn
    assert all(points > 0 for points in drawn.values()), drawn
    assert max(s.depth for s in shown.samples) > 0
    assert max(s.desired for s in shown.samples) == peak
    markers = {g.get("data-label") for g in page.iter(f"{SVG}g") if g.get("class") == "marker"}
    happened = {e.reason for e in shown.events}
    assert {
        "Activated",
        "Deactivated",
        "RolloutStarted",
        "RolledBack",
        "ReviewApproved",
        "DeadLettersReplayed",
        "CircuitTripped",
        "CircuitClosed",
    } <= (markers), (markers, happened)
    if demo.HPA_RESCALE in happened:
        assert demo.SCALED_UP in markers, (markers, happened)
    # Everything the demo started is stopped: its worker processes, Redis and Prometheus
    assert shown.workers.processes == {}
    assert shown.redis is not None
    assert shown.prometheus is not None
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=shown.redis.port, socket_connect_timeout=1).ping()
    with pytest.raises(urllib.error.URLError):
        shown.prometheus.query("up")
