"""Backoff of retried reconciles and the spread of resyncs: table tests."""

from __future__ import annotations

import pytest

from workerfleet.planners.resync import (
    FIRST_RESYNC_JITTER,
    RESYNC_JITTER,
    RETRY_BASE_SECONDS,
    RETRY_CAP_SECONDS,
    RETRY_JITTER,
    first_resync_delay,
    resync_delay,
    retry_delay,
)


@pytest.mark.parametrize(
    ("failures", "jitter", "expected"),
    [
        (0, 0.0, RETRY_BASE_SECONDS),  # counted as the first failure
        (1, 0.0, RETRY_BASE_SECONDS),
        (2, 0.0, 2 * RETRY_BASE_SECONDS),
        (3, 0.0, 4 * RETRY_BASE_SECONDS),
        (7, 0.0, 128.0),
        (8, 0.0, 256.0),
        (9, 0.0, RETRY_CAP_SECONDS),  # 512 s would be next: capped
        (10_000, 0.0, RETRY_CAP_SECONDS),  # no overflow however long it fails
        (1, 0.5, RETRY_BASE_SECONDS * (1 + RETRY_JITTER / 2)),
        (10_000, 0.999, RETRY_CAP_SECONDS * (1 + RETRY_JITTER * 0.999)),
    ],
)
def test_retry_delay(failures: int, jitter: float, expected: float) -> None:
    assert retry_delay(failures, jitter) == pytest.approx(expected)


def test_retry_delay_never_shrinks_with_more_failures() -> None:
    delays = [retry_delay(failures, 0.0) for failures in range(1, 40)]
    assert delays == sorted(delays)


@pytest.mark.parametrize(
    ("period", "jitter", "expected"),
    [
        (300.0, 0.0, 300.0),
        (300.0, 0.5, 300.0 * (1 - RESYNC_JITTER / 2)),
        (300.0, 0.999, 300.0 * (1 - RESYNC_JITTER * 0.999)),
        (5.0, 0.0, 5.0),
    ],
)
def test_resync_delay_is_within_one_period(period: float, jitter: float, expected: float) -> None:
    delay = resync_delay(period, jitter)
    assert delay == pytest.approx(expected)
    assert period * (1 - RESYNC_JITTER) <= delay <= period


@pytest.mark.parametrize(
    ("period", "jitter", "expected"),
    [
        (300.0, 0.0, 300.0),
        (300.0, 0.5, 300.0 * (1 - FIRST_RESYNC_JITTER / 2)),
        (300.0, 0.999, 300.0 * (1 - FIRST_RESYNC_JITTER * 0.999)),
    ],
)
def test_first_resync_delay_is_in_the_second_half_of_the_period(
    period: float, jitter: float, expected: float
) -> None:
    delay = first_resync_delay(period, jitter)
    assert delay == pytest.approx(expected)
    assert period / 2 <= delay <= period
