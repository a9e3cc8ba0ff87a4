"""What the depth sources compute without a server: Prometheus answers, job ages, addresses."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from workerfleet.api.common import split_host_port
from workerfleet.backends.base import QueueSample, QueueUnreachableError, envelope_age_seconds
from workerfleet.backends.prometheus import depth_from_response
from workerfleet.backends.redis_stream import entry_age_seconds

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, v]} for v in values]},
    }


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (vector("12"), 12),
        (vector("12.2"), 13),  # rounded up: a fraction of a job is still work
        (vector(), 0),  # an absent series: an empty queue
        (vector("NaN"), 0),
        (vector("-3"), 0),
        ({"status": "success", "data": {"resultType": "scalar", "result": [0, "5"]}}, 5),
    ],
)
def test_prometheus_depth(body: dict[str, Any], depth: int) -> None:
    assert depth_from_response(body) == depth


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (vector("1", "2"), "aggregate it to one"),
        ({"status": "error", "error": "parse error"}, "query failed"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "instant vector"),
    ],
)
def test_prometheus_answers_that_are_not_one_depth(body: dict[str, Any], message: str) -> None:
    with pytest.raises(QueueUnreachableError, match=message):
        depth_from_response(body)


@pytest.mark.parametrize(
    ("raw", "age"),
    [
        (json.dumps({"enqueuedAt": "2026-01-01T11:59:00Z"}), 60.0),
        (json.dumps({"enqueuedAt": "2026-01-01T11:59:30.500+00:00"}), 29.5),
        (json.dumps({"enqueuedAt": "2026-01-01T12:00:10Z"}), 0.0),  # a producer's clock ahead of ours
        (json.dumps({"enqueuedAt": "2026-01-01T11:59:00"}), None),  # no zone: unknowable
        (json.dumps({"id": "x"}), None),
        ("not json", None),
        (None, None),
    ],
)
def test_envelope_age(raw: str | None, age: float | None) -> None:
    assert envelope_age_seconds(raw, NOW) == age


@pytest.mark.parametrize(
    ("entry_id", "age"),
    [(b"1767268740000-0", 60.0), ("1767268800000-3", 0.0), (None, None), ("not-an-id", None)],
)
def test_stream_entry_age(entry_id: bytes | str | None, age: float | None) -> None:
    assert entry_age_seconds(entry_id, int(NOW.timestamp() * 1000)) == age


@pytest.mark.parametrize(
    ("address", "parts"),
    [("redis:6379", ("redis", 6379)), ("[::1]:5672", ("::1", 5672)), ("10.0.0.1:1", ("10.0.0.1", 1))],
)
def test_addresses(address: str, parts: tuple[str, int]) -> None:
    assert split_host_port(address) == parts


@pytest.mark.parametrize("address", ["redis", "redis:", ":6379", "redis:port"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        split_host_port(address)


@pytest.mark.parametrize(
    "body",
    [
        {"status": "error", "error": "token=hunter2 tenant-b's series"},
        "token=hunter2 tenant-b's series",
        {"status": "success", "data": {"resultType": "token=hunter2 tenant-b's series", "result": []}},
    ],
)
def test_a_prometheus_answer_is_never_copied_into_the_error(body: object) -> None:
    # The error becomes the pool's status and an Event: readable by whoever reads the pool
    with pytest.raises(QueueUnreachableError) as raised:
        depth_from_response(body)
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("answered", "held"), [(-3, 0), (0, 0), (41, 41), (2**53 - 1, 2**53 - 1), (2**64, 2**53 - 1)]
)
def test_a_depth_is_held_to_what_status_can_hold(answered: int, held: int) -> None:
    assert QueueSample(depth=answered).depth == held
