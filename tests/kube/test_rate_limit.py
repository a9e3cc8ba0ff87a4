"""The request-rate limit: a burst goes at once, then requests are spaced at the configured rate."""

from __future__ import annotations

import pytest

from workerfleet.kube.rate_limit import RateLimiter, TokenBucket


@pytest.mark.parametrize(
    ("qps", "burst", "times", "waits"),
    [
        # a full bucket lets a burst through at once, then spaces the rest 1/qps apart
        (10.0, 3, [0, 0, 0, 0, 0], [0, 0, 0, 0.1, 0.2]),
        # an idle second refills it, but never beyond the burst
        (10.0, 2, [0, 0, 5, 5, 5], [0, 0, 0, 0, 0.1]),
        # steady requests at the rate never wait
        (2.0, 1, [0, 0.5, 1.0, 1.5], [0, 0, 0, 0]),
        # requests faster than the rate wait for the shortfall only
        (2.0, 1, [0, 0.25, 0.5], [0, 0.25, 0.5]),
    ],
)
def test_a_token_bucket_admits_a_burst_then_the_rate(
    qps: float, burst: int, times: list[float], waits: list[float]
) -> None:
    bucket = TokenBucket(qps=qps, burst=burst, tokens=float(burst), updated=0.0)
    assert [round(bucket.take(now), 6) for now in times] == waits


def test_three_thousand_requests_at_once_are_held_to_the_rate() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = RateLimiter(qps=100, burst=200, clock=lambda: clock[0], sleep=sleep)
    waits = [limiter.acquire() for _ in range(3000)]
    # 200 go at once; the other 2800 are spread over 28 s at 100 per second
    assert len(slept) == 2800
    assert max(slept) == pytest.approx(28.0)
    assert limiter.waited_seconds == pytest.approx(sum(slept))
    assert waits == [0.0] * 200 + slept, "each caller is told how long it waited"


@pytest.mark.parametrize(("qps", "burst"), [(0, 10), (-1, 10), (10, 0)])
def test_a_limit_that_admits_nothing_is_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError, match="qps must be > 0 and burst >= 1"):
        RateLimiter(qps=qps, burst=burst)
