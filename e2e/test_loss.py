"""The loss checker, short profile: per backend, a burst of jobs of every kind through an autoscaled pool
of real worker processes while workers are SIGKILLed, the queue server restarts and a JobType change
rolls the workers; every job id must end exactly once (done, dead-lettered, expired or in review).
Hostile messages of every kind (devenv/hostile.py) ride along: each must be dead-lettered with its
kind's reason, and none may disturb the good jobs' ledger.

Replay a failure with the seed it printed: WORKERFLEET_LOSS_SEED=<seed> pytest e2e/test_loss.py.
The full profile (5,000 jobs per backend) is `make bench` (bench/loss.py).
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.cluster import Cluster
from devenv.hostile import HostileKind
from devenv.loss.plan import SHORT, schedule, table
from devenv.loss.run import LossRun, Target, rabbitmq_target, redis_target
from devenv.servers import RabbitMQServer, RedisServer, running

SEED_ENV = "WORKERFLEET_LOSS_SEED"


def seed() -> int:
    chosen = os.environ.get(SEED_ENV)
    return int(chosen) if chosen else random.SystemRandom().randrange(1, 1_000_000)


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, with every write fsynced to its append-only file before the reply."""
    yield from running(RedisServer(tmp_path / "redis", durable=True))


@pytest.fixture
def own_rabbitmq(tmp_path: Path) -> Iterator[RabbitMQServer]:
    """A RabbitMQ node this test alone restarts."""
    yield from running(RabbitMQServer(tmp_path / "rabbitmq"))


@pytest.fixture(params=["redis-list", "redis-stream", "rabbitmq"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "rabbitmq":
        # The pool records completed idempotency keys in a Redis of its own (idempotencyStore).
        return rabbitmq_target(
            request.getfixturevalue("own_rabbitmq"), request.getfixturevalue("durable_redis")
        )
    return redis_target(request.param, request.getfixturevalue("durable_redis"))


def test_no_job_is_lost_under_kills_a_queue_restart_and_a_job_type_rollout(
    operator: Cluster, namespace: str, target: Target, tmp_path: Path
) -> None:
    chosen = seed()
    print(f"\nloss checker: {target.backend}, seed {chosen} (replay: {SEED_ENV}={chosen})")
    plan = schedule(chosen, SHORT)
    started = time.monotonic()
    run = LossRun(operator, namespace, target, plan, SHORT, tmp_path / "loss", sys.stdout)

    result = run.run()

    print(table([result.row()]))
    print(f"{target.backend}: run took {time.monotonic() - started:.0f}s; faults fired:")
    print("\n".join("  " + line for line in result.faults))
    print("\n".join("  at-least-once " + line for line in result.reported()))
    # Every job id ended exactly once, none is left on the queue, and a keyed job's effect is applied once
    assert result.ok, f"seed {chosen}:\n" + "\n".join(result.problems())
    assert result.leftover_depth == 0
    # The run had its faults: the pool woke from zero, scaled out and went back to sleep by itself; the
    # queue server restarted; the JobType change was applied; workers were killed
    assert result.peak_replicas >= 2, result.peak_replicas
    assert result.final_replicas == 0
    assert any("server restarting" in line for line in result.faults)
    assert any("JobType" in line for line in result.faults)
    assert result.kills >= 1
    assert sum(result.ends.values()) == result.jobs
    # Every hostile message dead-lettered with its kind's reason, none run by a handler
    assert sum(result.hostile_ends.values()) == len(plan.hostile) == len(HostileKind), result.hostile_ends
