"""`make demo`'s scenario, shortened, against the session's operator: so the demo cannot rot."""

from __future__ import annotations

import io
import re
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from e2e import demo
from e2e.cluster import Cluster

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
)


@pytest.fixture
def demo_namespace(operator: Cluster) -> Iterator[Cluster]:
    """The demo's namespace, removed afterwards (the demo itself leaves it for the user to poke at)."""
    yield operator
    operator.kubectl("delete", "namespace", demo.NAMESPACE, "--wait=false", check=False)


def test_the_demo_scales_with_a_burst_and_rolls_a_bad_revision_back(
    demo_namespace: Cluster, tmp_path: Path
) -> None:
    out = io.StringIO()
    shown = demo.Demo(demo_namespace, tmp_path, SHORT, out)

    # The cluster and the operator (helm install, ServiceAccount token) are the session's, set up by
    # the same functions the demo's first steps call.
    demo.run(shown, [demo.start_servers, demo.apply_pool, demo.burst_and_scale, demo.bad_revision_rolls_back])

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
    assert "Stop it" in text
    # Everything the demo started is stopped: its worker processes, Redis and Prometheus
    assert shown.workers.processes == {}
    assert shown.redis is not None
    assert shown.prometheus is not None
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=shown.redis.port, socket_connect_timeout=1).ping()
    with pytest.raises(urllib.error.URLError):
        shown.prometheus.query("up")
