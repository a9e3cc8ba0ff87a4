"""When a pool is reconciled again without a watch event: retries of failed reconciles, and the
periodic resync that finds hand edits. Pure: the caller passes the random draws."""

from __future__ import annotations

RETRY_BASE_SECONDS = 2.0
"""The wait after the first failure; it doubles with each failure in a row."""
RETRY_CAP_SECONDS = 300.0
"""The longest wait between retries: a failure that lasts is still retried every five minutes."""
RETRY_JITTER = 0.1
"""Retries wait up to this fraction longer, so pools that failed together do not retry together."""
DEFAULT_RESYNC_SECONDS = 300.0
RESYNC_JITTER = 0.2
"""Later resyncs come up to this fraction early, so pools stay spread out, and every pool is resynced
within one period."""


def retry_delay(failures: int, jitter: float) -> float:
    """Seconds until the next attempt after `failures` failed reconciles in a row (at least 1);
    `jitter` is a random draw in [0, 1)."""
    exponent = min(max(failures, 1) - 1, 32)  # 2**32 times the base is far past the cap
    return min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2.0**exponent) * (1.0 + RETRY_JITTER * jitter)


FIRST_RESYNC_JITTER = 0.5
"""A pool's first resync comes up to this fraction of the period early: the thousands of pools seen
together at start-up come due over half a period, not in one minute, and none is read again sooner
than half a period after the start-up reconcile that verified it."""


def first_resync_delay(period: float, jitter: float) -> float:
    """Seconds until the first resync of a pool just seen; `jitter` in [0, 1)."""
    return period * (1.0 - FIRST_RESYNC_JITTER * jitter)


def resync_delay(period: float, jitter: float) -> float:
    """Seconds until a pool's next resync: within `period`, never more; `jitter` in [0, 1)."""
    return period * (1.0 - RESYNC_JITTER * jitter)
