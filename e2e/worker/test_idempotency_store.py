"""A RabbitMQ pool's idempotency store: a keyed job whose acknowledgement never reached the broker is
delivered again, to another worker process, and must not run again there.

Real RabbitMQ, real Redis (the store), two real `workerfleet worker` processes. Worker A reaches the
broker through a relay that, once A's handler is running, drops everything A sends: A's handler applies
its effect, A records the key and acknowledges into the void, and is then SIGKILLed, so the broker
hands the job to worker B.
"""

from __future__ import annotations

import signal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devenv.queues import RabbitMQQueue
from devenv.servers import RabbitMQServer, RedisServer
from devenv.waiting import eventually
from e2e.worker.conftest import Workers
from e2e.worker.proxy import HoldingProxy
from e2e.worker.test_worker_processes import events, produce


@dataclass
class ThroughAddress:
    """The pool's queue as one worker sees it: the broker at `address`, the store as configured."""

    name: str
    queue_spec: dict[str, Any]

    def spec(self) -> dict[str, Any]:
        return self.queue_spec


def test_a_keyed_job_whose_ack_was_lost_does_not_run_again_on_another_worker(
    rabbitmq_server: RabbitMQServer,
    redis_server: RedisServer,
    workers: Workers,
    probe_log: Path,
    tmp_path: Path,
) -> None:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    queue = RabbitMQQueue(rabbitmq_server.address, name, rabbitmq_server)
    store = {"address": redis_server.address, "keyPrefix": f"{name}:done:"}
    spec = {"rabbitmq": {"address": rabbitmq_server.address, "queue": name, "idempotencyStore": store}}
    gate = tmp_path / "gate"
    with HoldingProxy(rabbitmq_server.address) as relay:
        through_relay = {"rabbitmq": {**spec["rabbitmq"], "address": relay.address}}
        worker_a = workers.start(ThroughAddress(name, through_relay))
        produce(queue, [("keyed-1", {"gate": str(gate)})])
        eventually(lambda: events(probe_log, "start"), what="worker A to start the job", timeout=30)
        relay.hold()  # from here on, nothing A sends reaches the broker: its ack will be lost
        gate.touch()
        eventually(
            lambda: worker_a.jobs_total().get("succeeded"), what="worker A to settle the job", timeout=30
        )
        assert rabbitmq_server.unacknowledged(name) == 1, "the broker must not have seen A's ack"
        worker_a.signal(signal.SIGKILL)
        worker_a.wait_exit()
    # The relay is closed: the broker sees A's connection gone and requeues the job for B.
    worker_b = workers.start(ThroughAddress(name, spec))
    outcomes = eventually(worker_b.jobs_total, what="worker B to settle the redelivery", timeout=60)
    assert outcomes == {"duplicate": 1}, outcomes
    assert [pid for _, pid in events(probe_log, "start")] == [worker_a.pid]
    assert [pid for _, pid in events(probe_log, "finish")] == [worker_a.pid]
    # The key is in the shared store, with the JobType's TTL (3600 s)
    with redis_server.client() as client:
        assert 3500 < int(client.ttl(f"{name}:done:probe:keyed-1")) <= 3600
    eventually(
        lambda: rabbitmq_server.unacknowledged(name) == 0 and not queue.entries(name),
        what="the queue to be empty",
        timeout=30,
    )


def test_a_keyed_job_waits_while_the_store_is_down_and_runs_once_it_is_back(
    rabbitmq_server: RabbitMQServer, workers: Workers, probe_log: Path, tmp_path: Path
) -> None:
    store = RedisServer(tmp_path / "store", durable=True)
    store.start()
    try:
        name = f"jobs-{uuid.uuid4().hex[:8]}"
        queue = RabbitMQQueue(rabbitmq_server.address, name, rabbitmq_server)
        spec = {
            "rabbitmq": {
                "address": rabbitmq_server.address,
                "queue": name,
                "idempotencyStore": {"address": store.address},
            }
        }
        worker = workers.start(ThroughAddress(name, spec))
        store.kill()
        produce(queue, [("keyed-2", {})])
        # The worker cannot check the key: it does not run the job, and says why
        eventually(
            lambda: any("idempotency store" in entry.get("error", "") for entry in worker.logs()),
            what="the worker to report the store unreachable",
            timeout=30,
        )
        assert events(probe_log, "start") == []
        assert worker.probe("/readyz")[0] == 503
        store.start()
        eventually(
            lambda: events(probe_log, "finish"), what="the job to run once the store is back", timeout=90
        )
        assert [job for job, _ in events(probe_log, "start")] == ["keyed-2"]
        with store.client() as client:
            assert client.exists(f"{name}:done:probe:keyed-2")
    finally:
        store.stop()
