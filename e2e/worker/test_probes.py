"""The worker's own port, asked as the kubelet and Prometheus ask it: /healthz, /readyz and /metrics of
real `workerfleet worker` processes against real queue servers."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

from devenv.queues import QueueUnderTest, RedisListQueue
from devenv.servers import RedisServer
from devenv.waiting import eventually
from e2e.worker.conftest import Workers
from e2e.worker.test_worker_processes import events, produce

STALL_SECONDS = 2


def test_a_connected_worker_is_live_and_ready_and_serves_metrics_on_the_same_port(
    queue: QueueUnderTest, workers: Workers
) -> None:
    # Given a worker consuming its queue
    worker = workers.start(queue)
    # When the kubelet and Prometheus ask its one port
    health, ready, metrics = worker.probe("/healthz"), worker.probe("/readyz"), worker.probe("/metrics")
    # Then it is alive, ready with its policies loaded, and its metrics are there
    assert health[0] == 200, health
    assert ready == (200, "connected to the queue; policies of 1 job types loaded\n")
    assert metrics[0] == 200
    assert "workerfleet_jobs_in_flight" in metrics[1]
    assert worker.probe("/nothing")[0] == 404


def test_a_stuck_event_loop_turns_healthz_unhealthy_and_a_moving_one_heals_it(
    redis_server: RedisServer, workers: Workers
) -> None:
    # Given a worker whose consume loop may stand still for 2 s
    queue = RedisListQueue(redis_server.address, f"jobs-{uuid.uuid4().hex[:8]}")
    worker = workers.start(queue, environment={"WORKERFLEET_STALL_SECONDS": str(STALL_SECONDS)})
    assert worker.probe("/healthz")[0] == 200
    # When a handler blocks the event loop for 8 s
    produce(queue, [("stuck", {"block": 8})])
    started = time.monotonic()

    # Then /healthz answers 503, naming the stall, while the loop is stuck
    def unhealthy() -> str | None:
        status, body = worker.probe("/healthz")
        return body if status == 503 else None

    body = eventually(
        unhealthy,
        what="/healthz to fail while the event loop is blocked",
        timeout=10,
    )
    assert "has not turned" in body, body
    print(
        f"/healthz failed {time.monotonic() - started:.1f}s after the job was enqueued"
        f" (limit {STALL_SECONDS}s)"
    )
    # And it recovers once the loop turns again
    eventually(lambda: worker.probe("/healthz")[0] == 200, what="/healthz to recover", timeout=20)


def test_readyz_follows_the_queue_connection_and_the_drain(
    tmp_path: Path, workers: Workers, probe_log: Path
) -> None:
    # Given a worker on a Redis server of its own
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        queue = RedisListQueue(server.address, f"jobs-{uuid.uuid4().hex[:8]}")
        worker = workers.start(queue, drain_seconds=10)
        assert worker.probe("/readyz")[0] == 200
        # When the queue server goes away, the worker is not ready, but alive (a restart would not help)
        server.stop()
        eventually(lambda: worker.probe("/readyz")[0] == 503, what="/readyz to fail", timeout=15)
        assert worker.probe("/readyz")[1] == "not connected to the queue\n"
        assert worker.probe("/healthz")[0] == 200
        # When it comes back, the worker is ready again
        server.start()
        eventually(lambda: worker.probe("/readyz")[0] == 200, what="/readyz to recover", timeout=30)
        # When the worker drains a job after SIGTERM, it is alive and not ready until it exits
        produce(queue, [("draining", {"sleep": 3})])
        eventually(
            lambda: ("draining", worker.pid) in events(probe_log, "start"),
            what="the job to start",
            timeout=15,
        )
        worker.signal(signal.SIGTERM)
        time.sleep(0.5)
        assert worker.probe("/readyz") == (503, "draining: taking no more jobs\n")
        assert worker.probe("/healthz") == (200, "draining\n")
        assert worker.wait_exit() == 0
    finally:
        server.stop()
