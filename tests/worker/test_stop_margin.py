"""The worker's stop fits the pod's grace period, which the operator sets from the same drain time."""

from __future__ import annotations

from workerfleet.planners.children import DRAIN_MARGIN_SECONDS
from workerfleet.worker.runtime import STOP_MARGIN_SECONDS


def test_a_stop_ends_before_the_pods_grace_period_does() -> None:
    # The grace period is the longest timeout (the default drain time) plus DRAIN_MARGIN_SECONDS; the
    # process also needs a moment to exit after the runtime returns.
    assert STOP_MARGIN_SECONDS + 1 <= DRAIN_MARGIN_SECONDS
