"""Per-replica throughput, estimated from how fast the queue drains between polls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workerfleet.handlers.autoscaling import PollMemory

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_no_estimate_until_the_queue_drains() -> None:
    memory = PollMemory()
    memory.observe_drain(100, 2, START)
    assert memory.throughput_per_replica is None
    memory.observe_drain(120, 2, START + timedelta(seconds=10))  # growing: says nothing about throughput
    assert memory.throughput_per_replica is None


def test_drain_rate_per_replica_is_smoothed() -> None:
    memory = PollMemory()
    memory.observe_drain(100, 2, START)
    memory.observe_drain(80, 2, START + timedelta(seconds=10))  # 20 jobs / 10 s / 2 replicas
    assert memory.throughput_per_replica == 1.0
    memory.observe_drain(40, 2, START + timedelta(seconds=20))  # 2.0 now, smoothed
    assert memory.throughput_per_replica is not None
    assert 1.0 < memory.throughput_per_replica < 2.0


def test_zero_replicas_teach_nothing() -> None:
    memory = PollMemory()
    memory.observe_drain(100, 0, START)
    memory.observe_drain(50, 0, START + timedelta(seconds=10))
    assert memory.throughput_per_replica is None
