"""How long a failed long-running task (a queue poller, a rollout clock) waits before it tries again.

Exponential from RETRY_BASE_SECONDS, capped at RETRY_CAP_SECONDS so a task is back within seconds of
the API server answering again, and jittered ("equal jitter": half fixed, half random) so that the
tasks of many pools, failed by the same outage, do not retry in lockstep.
"""

from __future__ import annotations

RETRY_BASE_SECONDS = 0.5
RETRY_CAP_SECONDS = 4.0
"""Well below the 10 s within which every reaction must resume once the API server answers again."""


def retry_delay(failures: int, jitter: float) -> float:
    """Seconds to wait after the `failures`-th failure in a row; `jitter` is uniform in [0, 1)."""
    if failures < 1:
        raise ValueError(f"failures counts from 1, not {failures}")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be within [0, 1), not {jitter}")
    # 2**min(...) keeps the exponent bounded however long an outage lasts.
    ceiling = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2.0 ** min(failures - 1, 32))
    return ceiling / 2 + jitter * ceiling / 2


READINGS_KEPT_POLLS = 3
"""Polls a served reading outlives: one missed poll (a slow read, a hiccup) must not blank the metric."""


def reading_lifetime_seconds(polling_interval_seconds: float, read_timeout_seconds: float) -> float:
    """How long the metrics API serves a reading: a few polls, plus one read that times out.

    A poller that stopped (or hangs) leaves no value rather than an old one, so the HPA holds its
    replicas instead of acting on a queue depth from minutes ago.
    """
    return READINGS_KEPT_POLLS * polling_interval_seconds + read_timeout_seconds
