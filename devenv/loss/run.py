"""One loss-checker run against one backend: real queue server, the operator's autoscaled WorkerPool,
real `workerfleet worker` processes following its Ready pods, faults on the seeded schedule, and the
verdict over every job id.

The fault clock starts when the first handler runs (the pool woke from zero by its own autoscaler).
A kill SIGKILLs one running worker process; the process of a pod that is still Ready is started again
under the same pod name (the kubelet restarting the container), so it keeps its worker id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import redis
import yaml

from devenv.cluster import Cluster
from devenv.demo import HostWorkers
from devenv.loss.handlers import LEDGER_ENV, append
from devenv.loss.plan import (
    KEYED_TYPE,
    MAX_ATTEMPTS,
    PLAIN_TYPE,
    Event,
    Fault,
    FaultEvent,
    Kind,
    Profile,
    Record,
    Schedule,
    Verdict,
    parse_ledger,
    verdict,
)
from devenv.queues import QueueUnderTest, RabbitMQQueue, RedisListQueue, RedisStreamQueue
from devenv.servers import RabbitMQServer, RedisServer
from workerfleet.worker.envelope import Envelope, encode, new_envelope

REPOSITORY = Path(__file__).resolve().parents[2]
POOL = "loss"
BACKENDS = ("redis-list", "redis-stream", "rabbitmq")
EXPIRED_AGE_SECONDS = 120
EXPIRING_DEADLINE_SECONDS = 60
TICK_SECONDS = 1.0
ACCOUNT_EVERY_SECONDS = 3.0
SCALE_TO_ZERO_TIMEOUT_SECONDS = 180.0
START_TIMEOUT_SECONDS = 120.0
KILL_WAIT_SECONDS = 10.0


@dataclass
class Target:
    """The queue under test and how to shake and inspect its server."""

    backend: str
    queue: QueueUnderTest
    restart: Callable[[], None]
    leftover: Callable[[], int]
    """Jobs the queue still holds: waiting, in flight and waiting for a retry."""
    atomic_settle: bool = True
    """See plan.Verdict.atomic_settle."""
    shared_keys: bool = True
    """See plan.Verdict.shared_keys."""


def redis_target(backend: str, server: RedisServer) -> Target:
    name = f"loss-{uuid.uuid4().hex[:6]}"
    client = redis.Redis(host="127.0.0.1", port=server.port)

    def restart() -> None:
        server.kill()
        server.start()

    if backend == "redis-list":

        def leftover() -> int:
            held = sum(int(client.llen(key)) for key in client.scan_iter(match=f"{name}:processing:*"))
            return int(client.llen(name)) + held + int(client.zcard(f"{name}:delayed"))

        return Target(backend, RedisListQueue(server.address, name), restart, leftover)

    stream = RedisStreamQueue(server.address, name)

    def stream_leftover() -> int:
        waiting = len(stream.entries(name)) if client.exists(name) else 0
        return waiting + (stream.held() if client.exists(name) else 0) + int(client.zcard(f"{name}:delayed"))

    return Target(backend, stream, restart, stream_leftover)


def rabbitmq_target(server: RabbitMQServer, store: RedisServer | None = None) -> Target:
    """`store`: the pool's idempotencyStore; without one, completed keys stay in each worker process."""
    name = f"loss-{uuid.uuid4().hex[:6]}"

    def leftover() -> int:
        return server.queue_messages(lambda queue: queue == name or queue.startswith(f"{name}.retry."))

    queue = RabbitMQQueue(server.address, name, server, store.address if store is not None else None)
    return Target(
        "rabbitmq", queue, server.restart, leftover, atomic_settle=False, shared_keys=store is not None
    )


def job_types(queue: str, *, backoff_max_seconds: float = 1.0) -> list[dict[str, Any]]:
    def job_type(name: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "JobType",
            "metadata": {"name": name},
            "spec": {
                "lane": "fast",
                "timeoutSeconds": 10,
                "retry": {
                    "maxAttempts": MAX_ATTEMPTS,
                    "retryOn": ["transient", "unknown", "timeout"],
                    "backoff": {"initialSeconds": 0.2, "maxSeconds": backoff_max_seconds, "multiplier": 2},
                },
                "deadLetter": {"queue": f"{queue}.dlq"},
                "review": {"queue": f"{queue}.review"},
                **extra,
            },
        }

    return [job_type(PLAIN_TYPE, {}), job_type(KEYED_TYPE, {"idempotency": {"keyField": "key"}})]


def worker_pool(queue_spec: dict[str, Any], profile: Profile, ledger: Path) -> dict[str, Any]:
    environment = {
        "WORKERFLEET_HANDLERS": "devenv.loss.handlers",
        LEDGER_ENV: str(ledger),
        "PYTHONPATH": str(REPOSITORY),
        "WORKERFLEET_HEARTBEAT_SECONDS": "3",
    }
    window = {"stabilizationWindowSeconds": 0}
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": POOL},
        "spec": {
            "jobTypes": [PLAIN_TYPE, KEYED_TYPE],
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "worker",
                            "image": "workerfleet/loss-worker:1",
                            "args": ["worker"],
                            "env": [{"name": key, "value": value} for key, value in environment.items()],
                        }
                    ]
                }
            },
            "queue": queue_spec,
            "autoscaling": {
                "minReplicas": 0,
                "maxReplicas": profile.max_replicas,
                "targetDepthPerReplica": profile.target_per_replica,
                "pollingIntervalSeconds": 1,
                "cooldownSeconds": profile.cooldown_seconds,
                "behavior": {
                    "scaleUp": {**window, "policies": [{"type": "Pods", "value": 10, "periodSeconds": 5}]},
                    "scaleDown": {
                        **window,
                        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 5}],
                    },
                },
            },
        },
    }


class Fleet(HostWorkers):
    """HostWorkers that also start a Ready pod's process again when it died (the kubelet's restart)."""

    def follow(self, pods: list[dict[str, Any]], policies: str) -> None:
        by_name = {pod["metadata"]["name"]: pod for pod in pods}
        for name, worker in list(self.processes.items()):
            if worker.process.poll() is not None and name in by_name:
                del self.processes[name]
                self._start(name, by_name[name], policies)
        super().follow(pods, policies)

    def alive(self) -> dict[str, int]:
        return {name: w.process.pid for name, w in self.processes.items() if w.process.poll() is None}


@dataclass
class LossRun:
    cluster: Cluster
    namespace: str
    target: Target
    plan: Schedule
    profile: Profile
    directory: Path
    out: TextIO
    fleet: Fleet = field(init=False)
    ledger: Path = field(init=False)
    peak_replicas: int = 0
    fired: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ledger = self.directory / "ledger.jsonl"
        self.ledger.touch()
        self.fleet = Fleet(self.directory / "workers", None)

    def say(self, text: str) -> None:
        print(f"[{self.target.backend}] {text}", file=self.out, flush=True)

    def kubectl(self, *args: str, input_text: str | None = None) -> str:
        return self.cluster.kubectl(*args, "-n", self.namespace, input_text=input_text).stdout

    def apply(self, *documents: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input_text="\n---\n".join(yaml.safe_dump(d) for d in documents))

    def replicas(self) -> int:
        body = json.loads(self.kubectl("get", "workerpool", POOL, "-o", "json"))
        return int(body["spec"].get("replicas", 0))

    def follow(self) -> None:
        pods = json.loads(self.kubectl("get", "pods", "-l", f"workerfleet.dev/pool={POOL}", "-o", "json"))[
            "items"
        ]
        config = self.kubectl("get", "configmap", f"{POOL}-policies", "-o", "json", "--ignore-not-found")
        if config:
            self.fleet.follow(pods, json.loads(config)["data"]["policies.json"])
        self.peak_replicas = max(self.peak_replicas, self.replicas())

    def records(self) -> list[Record]:
        return parse_ledger(self.ledger.read_text())

    def dead_letter_id(self, envelope: Envelope, claimed: set[str]) -> str:
        """The job id a dead letter stands for: a hostile message's tag when it keeps one's bytes (the
        worker had to give it an id of its own), preferring one not claimed by an earlier dead letter."""
        matching = [planned.message.tag for planned in self.plan.hostile if planned.message.matches(envelope)]
        fresh = [tag for tag in matching if tag not in claimed]
        chosen = (fresh or matching or [envelope.id])[0]
        claimed.add(chosen)
        return chosen

    def account(self) -> Verdict:
        queue = self.target.queue.name
        claimed: set[str] = set()
        dead = [
            (
                self.dead_letter_id(envelope, claimed),
                envelope.last_failure.reason if envelope.last_failure else "",
            )
            for envelope in self.target.queue.entries(f"{queue}.dlq")
        ]
        review = [envelope.id for envelope in self.target.queue.entries(f"{queue}.review")]
        return verdict(
            self.target.backend,
            self.plan,
            self.records(),
            dead,
            review,
            self.target.leftover(),
            atomic_settle=self.target.atomic_settle,
            shared_keys=self.target.shared_keys,
        )

    def declare(self) -> None:
        """What a producer declares before its first job (a RabbitMQ queue, a stream's group), so the pool
        can read its depth: a RabbitMQ queue that does not exist is an unreachable queue."""

        async def connect() -> None:
            producer = self.target.queue.producer()
            await producer.connect()
            await producer.close()

        asyncio.run(connect())

    def enqueue(self) -> None:
        async def produce() -> None:
            producer = self.target.queue.producer()
            await producer.connect()
            try:
                now = datetime.now(UTC)
                for index, job in enumerate(self.plan.jobs):
                    for message in self.plan.hostile_before(index):
                        await producer.enqueue(message.body)
                    expiring = job.kind is Kind.EXPIRING
                    envelope = new_envelope(
                        job.job_type,
                        job.payload(self.profile.job_seconds),
                        now=now - timedelta(seconds=EXPIRED_AGE_SECONDS) if expiring else now,
                        job_id=job.id,
                        deadline_seconds=EXPIRING_DEADLINE_SECONDS if expiring else None,
                    )
                    await producer.enqueue(encode(envelope))
            finally:
                await producer.close()

        asyncio.run(produce())

    def fire(self, event: FaultEvent, restarts: list[threading.Thread]) -> None:
        match event.fault:
            case Fault.KILL:
                alive = self.fleet.alive()
                name = self.plan.pick(event, list(alive))
                if name is None:
                    self.fired.append(f"{event.describe()}: no worker running")
                    return
                append(str(self.ledger), Record(Event.KILLED, time.time(), alive[name]))
                os.kill(alive[name], signal.SIGKILL)
                # Gone before the next kill picks (a process in an fsync dies only once it returns)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.fleet.processes[name].process.wait(timeout=KILL_WAIT_SECONDS)
                self.fired.append(f"{event.describe()}: SIGKILL {name} (pid {alive[name]})")
            case Fault.RESTART_QUEUE:
                thread = threading.Thread(target=self.target.restart, daemon=True)
                thread.start()
                restarts.append(thread)
                self.fired.append(f"{event.describe()}: {self.target.backend} server restarting")
            case Fault.CHANGE_JOB_TYPE:
                self.apply(*job_types(self.target.queue.name, backoff_max_seconds=2.0))
                self.fired.append(f"{event.describe()}: JobType {PLAIN_TYPE} retry.backoff.maxSeconds 1 -> 2")
        self.say(self.fired[-1])

    def run(self) -> Verdict:
        try:
            return self._run()
        finally:
            self.fleet.stop_all()

    def _run(self) -> Verdict:
        self.say(f"schedule ({self.profile.name} profile):\n{self.plan.describe()}")
        pool = worker_pool(self.target.queue.spec(), self.profile, self.ledger)
        self.apply(*job_types(self.target.queue.name), pool)
        self.declare()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not (self._queue_read() and self.replicas() == 0):
            if time.monotonic() > deadline:
                raise TimeoutError("the pool never read its queue and went to sleep")
            time.sleep(TICK_SECONDS)
        started = time.monotonic()
        self.enqueue()
        self.say(
            f"enqueued {len(self.plan.jobs)} jobs in {time.monotonic() - started:.1f}s; pool at 0 replicas"
        )
        restarts: list[threading.Thread] = []
        drained = self._shake_until_drained(started, restarts)
        if drained is None:
            self.say("drain timeout: accounting as it stands")
        else:
            self.say(f"every job ended {drained:.1f}s after the enqueue; waiting for the pool to sleep")
            self._wait_for_sleep()
        for thread in restarts:
            thread.join(timeout=120)
        self.fleet.stop_all()
        final = self.account()
        final.drain_seconds = drained if drained is not None else float("nan")
        final.peak_replicas = self.peak_replicas
        final.final_replicas = self.replicas()
        final.faults = list(self.fired)
        self.say(f"pool peaked at {self.peak_replicas} replicas, back to {final.final_replicas}")
        return final

    def _shake_until_drained(self, started: float, restarts: list[threading.Thread]) -> float | None:
        """Follow the pool and fire the faults when due, until every job ended and the queue is empty;
        seconds from the enqueue to then, None at the drain timeout."""
        pending = list(self.plan.faults)
        fault_clock: float | None = None
        last_account = 0.0
        deadline = started + self.profile.drain_timeout_seconds
        while time.monotonic() < deadline:
            self.follow()
            now = time.monotonic()
            if fault_clock is None and self.ledger.stat().st_size > 0:
                fault_clock = now
                self.say(f"first job ran {now - started:.1f}s after the enqueue: fault clock starts")
            while fault_clock is not None and pending and pending[0].at_seconds <= now - fault_clock:
                self.fire(pending.pop(0), restarts)
            faults_done = all(e.fault is Fault.KILL for e in pending) and not any(
                t.is_alive() for t in restarts
            )
            if faults_done and now - last_account >= ACCOUNT_EVERY_SECONDS:
                last_account = now
                if self._drained():
                    return now - started
            time.sleep(TICK_SECONDS)
        return None

    def _wait_for_sleep(self) -> None:
        deadline = time.monotonic() + SCALE_TO_ZERO_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self.follow()
            if self.replicas() == 0 and not self.fleet.processes:
                return
            time.sleep(TICK_SECONDS)

    def _queue_read(self) -> bool:
        body = json.loads(self.kubectl("get", "workerpool", POOL, "-o", "json"))
        conditions = (body.get("status") or {}).get("conditions") or []
        return any(c["type"] == "QueueReachable" and c["status"] == "True" for c in conditions)

    def _drained(self) -> bool:
        """Every job ended and the queue empty (the queue server may be restarting: not yet, then)."""
        try:
            result = self.account()
        except Exception as error:  # any client's connection error while the server restarts
            self.say(f"could not read the queues yet: {type(error).__name__}: {error}")
            return False
        accounted = result.jobs - len(result.lost) - len(result.stranded)
        self.say(
            f"{accounted}/{result.jobs} jobs ended, {result.leftover_depth} on the queue,"
            f" {len(self.fleet.processes)} workers, {result.invocations} handler runs"
        )
        return not result.lost and not result.stranded and result.leftover_depth == 0


def backend_name_ok(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    return name
