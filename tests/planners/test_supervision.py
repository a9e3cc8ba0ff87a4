"""Retry delays of failed long-running tasks, and how long a queue reading may be served."""

from __future__ import annotations

import pytest

from workerfleet.planners.supervision import RETRY_CAP_SECONDS, reading_lifetime_seconds, retry_delay


@pytest.mark.parametrize(
    ("failures", "jitter", "delay"),
    [
        (1, 0.0, 0.25),
        (1, 0.5, 0.375),
        (2, 0.0, 0.5),
        (3, 0.0, 1.0),
        (4, 0.0, 2.0),
        (4, 0.999, 3.998),
        (5, 0.0, 2.0),  # capped: half of the cap at the least
        (5, 0.5, 3.0),
        (6, 0.0, 2.0),
        (1000, 0.999, 3.998),  # however long the outage, never beyond the cap
    ],
)
def test_retry_delay_doubles_up_to_the_cap_with_jitter(failures: int, jitter: float, delay: float) -> None:
    assert retry_delay(failures, jitter) == pytest.approx(delay)


def test_retry_delay_never_exceeds_the_cap() -> None:
    assert max(retry_delay(n, 0.9999) for n in range(1, 200)) < RETRY_CAP_SECONDS


@pytest.mark.parametrize(("failures", "jitter"), [(0, 0.5), (-1, 0.5), (1, -0.1), (1, 1.0)])
def test_retry_delay_refuses_nonsense(failures: int, jitter: float) -> None:
    with pytest.raises(ValueError, match=r"failures|jitter"):
        retry_delay(failures, jitter)


@pytest.mark.parametrize(
    ("interval", "timeout", "lifetime"),
    [(1, 10, 13), (5, 10, 25), (30, 10, 100)],
)
def test_reading_lifetime_follows_the_polling_interval(interval: int, timeout: int, lifetime: int) -> None:
    assert reading_lifetime_seconds(interval, timeout) == lifetime
