"""The canary analysis sends nothing to a Prometheus off the chart's allowlist."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from workerfleet.api.workerpool import Analysis
from workerfleet.handlers import tenancy
from workerfleet.handlers.rollout import _Metrics


@pytest.fixture
def allowlist() -> Iterator[None]:
    tenancy.configure(tenancy.Tenancy(prometheus_addresses=("https://prometheus.monitoring:9090",)))
    yield
    tenancy.configure(tenancy.Tenancy())


@pytest.mark.usefixtures("allowlist")
def test_an_analysis_prometheus_off_the_allowlist_is_not_queried() -> None:
    analysis = Analysis.model_validate(
        {"maxErrorRate": 0.02, "prometheus": {"address": "http://elsewhere:9090"}}
    )
    metrics = _Metrics("team-a", "pool")
    measurement = asyncio.run(metrics.measure(analysis, "canary", "stable", window_seconds=60))
    assert measurement.canary is None
    assert measurement.stable is None
    assert "http://elsewhere:9090 is not in the operator's allowlist" in (measurement.error or "")
    assert metrics.provider is None  # no client opened, no Secret read
