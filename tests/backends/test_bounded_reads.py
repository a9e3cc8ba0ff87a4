"""A Prometheus on loopback that answers too much, too deep, too slowly or never: the pool's read fails
with a reason naming the bound, and the operator reads no more than the bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devenv.hostile_prometheus import HostilePrometheus
from devenv.servers import running
from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import Analysis, PrometheusQueue
from workerfleet.backends.analysis import PrometheusAnalysis
from workerfleet.backends.base import QueueUnreachableError
from workerfleet.backends.bounds import MAX_ANSWER_BYTES, MAX_ANSWER_NESTING, BoundReason
from workerfleet.backends.prometheus import PrometheusDepth

HUGE_BYTES = 64 * MAX_ANSWER_BYTES


@pytest.fixture
def hostile() -> Iterator[HostilePrometheus]:
    yield from running(HostilePrometheus(oversized_bytes=HUGE_BYTES))


def _read_depth(address: str, query: str) -> QueueUnreachableError:
    source = PrometheusDepth(
        PrometheusQueue.model_validate({"address": address, "query": query}), Credentials()
    )

    async def read() -> QueueUnreachableError:
        try:
            await source.read()
        except QueueUnreachableError as error:
            return error
        finally:
            await source.close()
        raise AssertionError("the read succeeded")

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("behaviour", "reason", "words"),
    [
        ("oversized", BoundReason.TOO_LARGE, f"larger than {MAX_ANSWER_BYTES // 1024} KiB"),
        ("nested", BoundReason.TOO_DEEP, f"nested deeper than {MAX_ANSWER_NESTING} levels"),
        ("slow", BoundReason.TIMED_OUT, "no complete answer within 5s"),
        ("never", BoundReason.TIMED_OUT, "no complete answer within 5s"),
    ],
)
def test_a_depth_read_past_a_bound_fails_with_the_bound_as_reason(
    hostile: HostilePrometheus, behaviour: str, reason: str, words: str
) -> None:
    started = time.monotonic()
    error = _read_depth(hostile.address, behaviour)
    assert (error.reason, words in str(error)) == (reason, True), str(error)
    assert time.monotonic() - started < 8
    if behaviour == "oversized":  # the rest was never read: the server could not send it all
        assert hostile.sent < HUGE_BYTES / 2, hostile.sent


@pytest.mark.parametrize("behaviour", ["oversized", "nested"])
def test_a_canary_analysis_past_a_bound_is_an_analysis_error_naming_it(
    hostile: HostilePrometheus, behaviour: str
) -> None:
    analysis = Analysis.model_validate(
        {
            "maxErrorRate": 0.1,
            "intervalSeconds": 15,
            "prometheus": {"address": hostile.address},
            "totalQuery": behaviour,
        }
    )
    provider = PrometheusAnalysis(analysis, Credentials(), pool="thumbs", namespace="media")

    async def measure() -> Any:
        try:
            return await provider.measure("new", "old", 15)
        finally:
            await provider.close()

    measurement = asyncio.run(measure())
    assert measurement.error is not None
    assert "the operator's bound" in measurement.error, measurement.error
