"""The external metrics API's bodies and selector parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workerfleet.adapter.readings import Reading, Readings
from workerfleet.adapter.responses import (
    GROUP_VERSION,
    SelectorError,
    metric_values,
    parse_selector,
    resource_list,
)

TIME = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", {}),
        ("workerfleet.dev/pool=thumbs", {"workerfleet.dev/pool": "thumbs"}),
        (
            "workerfleet.dev/pool==thumbs, namespace=media",
            {"workerfleet.dev/pool": "thumbs", "namespace": "media"},
        ),
    ],
)
def test_equality_selectors(text: str, parsed: dict[str, str]) -> None:
    assert parse_selector(text) == parsed


@pytest.mark.parametrize("text", ["pool!=thumbs", "pool in (a,b)", "pool", "=thumbs"])
def test_other_selectors_are_refused_clearly(text: str) -> None:
    with pytest.raises(SelectorError, match="key=value"):
        parse_selector(text)


def test_discovery_names_the_queue_depth_metric() -> None:
    body = resource_list()
    assert body["groupVersion"] == GROUP_VERSION
    assert [resource["name"] for resource in body["resources"]] == ["workerfleet_queue_depth"]
    assert body["resources"][0]["namespaced"] is True


def test_values_match_the_selector_within_the_namespace() -> None:
    readings = {"thumbs": Reading(400, TIME, 25), "reports": Reading(7, TIME, 25)}
    body = metric_values("media", {"workerfleet.dev/pool": "thumbs"}, readings)
    assert body["kind"] == "ExternalMetricValueList"
    [item] = body["items"]
    assert item["value"] == "400"
    assert item["timestamp"] == "2026-01-02T03:04:05Z"
    assert item["metricLabels"] == {"workerfleet.dev/pool": "thumbs", "namespace": "media"}
    assert metric_values("media", {"namespace": "other"}, readings)["items"] == []
    assert len(metric_values("media", {}, readings)["items"]) == 2


def test_readings_are_kept_per_namespace_and_forgotten_on_request() -> None:
    readings = Readings()
    readings.put("a", "thumbs", Reading(1, TIME, 25))
    readings.put("b", "thumbs", Reading(2, TIME, 25))
    assert readings.in_namespace("a", TIME) == {"thumbs": Reading(1, TIME, 25)}
    readings.forget("a", "thumbs")
    assert readings.in_namespace("a", TIME) == {}
    assert readings.in_namespace("b", TIME) == {"thumbs": Reading(2, TIME, 25)}


@pytest.mark.parametrize(
    ("age", "served"), [(0, True), (24.9, True), (25, True), (25.1, False), (600, False)]
)
def test_a_reading_older_than_its_lifetime_is_not_served(age: float, served: bool) -> None:
    """A poller that stopped or hangs leaves no value: the HPA holds rather than act on an old depth."""
    readings = Readings()
    readings.put("a", "thumbs", Reading(400, TIME, 25))
    shown = readings.in_namespace("a", TIME + timedelta(seconds=age))
    assert shown == ({"thumbs": Reading(400, TIME, 25)} if served else {})
    assert (metric_values("a", {}, shown)["items"] != []) is served
