"""One contender of `bench.peers`: a worker process that runs a no-op job, or the producer feeding it.

    python -m bench.peer_worker work CONTENDER --concurrency C --expect N --result PATH
    python -m bench.peer_worker produce CONTENDER --count N [--rate JOBS_PER_SECOND]

Each job carries the wall-clock time it was enqueued; the handler notes when it starts. The worker writes
PATH.ready at its first job, and PATH (JSON: first and last start, each job's enqueue-to-start latency,
the process's CPU time between the two, its RSS) once N jobs have started; `bench.peers` then kills
it. Servers come from the environment: BENCH_REDIS (host:port), BENCH_AMQP (host:port), BENCH_QUEUE (a
name fresh for each run).

Imports only the contender's own library, inside the function that runs it, so the module loads in each
peer's virtualenv (see pyproject's `bench` extras) as well as in the project's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TICK_SECONDS = 0.005
"""A paced producer sends the jobs due within each tick of this length together."""
PREFILL_BATCH = 500
ARQ_POLL_SECONDS = 0.005
"""arq polls its queue (default every 0.5 s, one batch of up to max_jobs per poll): at 5 ms it is not
held back by the default's wait."""
WORK_LIMIT_SECONDS = 300.0
"""A worker that has not seen its jobs by then stops by itself (the orchestrator also kills it)."""


def redis_host_port() -> tuple[str, int]:
    host, port = os.environ["BENCH_REDIS"].rsplit(":", 1)
    return host, int(port)


def redis_url() -> str:
    return f"redis://{os.environ['BENCH_REDIS']}/0"


def amqp_url() -> str:
    return f"amqp://guest:guest@{os.environ['BENCH_AMQP']}/"


def queue_name() -> str:
    return os.environ["BENCH_QUEUE"]


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Recorder:
    """Counts job starts (from any thread) and writes the result once `expect` jobs have started."""

    def __init__(self, expect: int, result: Path) -> None:
        self._expect = expect
        self._result = result
        self._lock = threading.Lock()
        self._starts: list[float] = []
        self._latencies: list[float] = []
        self._first_cpu = 0.0
        self.done = threading.Event()

    def started(self, sent_at: float) -> None:
        now = time.time()
        with self._lock:
            self._starts.append(now)
            self._latencies.append(now - sent_at)
            count = len(self._starts)
        if count == 1:
            self._first_cpu = time.process_time()
            self._result.with_suffix(".ready").write_text("")
        if count == self._expect:
            record = {
                "first_start": self._starts[0],
                "last_start": self._starts[-1],
                "cpu_seconds": time.process_time() - self._first_cpu,
                "latencies": self._latencies,
                "rss_kib": rss_kib(),
            }
            temporary = self._result.with_suffix(".tmp")
            temporary.write_text(json.dumps(record))
            temporary.rename(self._result)
            self.done.set()


_ENVELOPE_TEMPLATE: list[bytes] = []


def envelope_body(sent_at: float) -> bytes:
    """The same job workerfleet's producers write, so every Redis and AMQP contender moves the same bytes.
    Encoded once, then only the id and the time filled in: a paced producer shares the machine with the
    worker it measures, so it must cost next to nothing per job."""
    if not _ENVELOPE_TEMPLATE:
        from datetime import UTC, datetime  # noqa: PLC0415

        from workerfleet.worker.envelope import encode, new_envelope  # noqa: PLC0415

        envelope = new_envelope("noop", {"sent": "SENT"}, now=datetime.now(UTC), job_id="ID")
        _ENVELOPE_TEMPLATE.append(encode(envelope))
    job_id = uuid.uuid4().hex.encode()
    return (
        _ENVELOPE_TEMPLATE[0]
        .replace(b'"ID"', b'"' + job_id + b'"')
        .replace(b'"SENT"', repr(sent_at).encode())
    )


def sent_of(body: bytes) -> float:
    sent: float = json.loads(body)["payload"]["sent"]
    return sent


# ---- the floors: a bare client loop, nothing else


def work_bare_brpop(recorder: Recorder, concurrency: int) -> None:
    import redis  # noqa: PLC0415

    host, port = redis_host_port()
    client = redis.Redis(host=host, port=port)
    key = queue_name()
    while not recorder.done.is_set():
        popped: Any = client.brpop([key], timeout=1)
        if popped is not None:
            recorder.started(sent_of(popped[1]))


def work_bare_xreadgroup(recorder: Recorder, concurrency: int) -> None:
    """XREADGROUP up to `concurrency` entries, then one XACK for them all."""
    import redis  # noqa: PLC0415

    host, port = redis_host_port()
    client = redis.Redis(host=host, port=port)
    key = queue_name()
    with contextlib.suppress(redis.ResponseError):  # the group exists
        client.xgroup_create(key, "bench", id="0", mkstream=True)
    while not recorder.done.is_set():
        reply: Any = client.xreadgroup("bench", "bare", {key: ">"}, count=concurrency, block=1000)
        entries = [entry for _stream, found in reply or [] for entry in found]
        for _entry_id, fields in entries:
            recorder.started(sent_of(fields[b"job"]))
        if entries:
            client.xack(key, "bench", *[entry_id for entry_id, _fields in entries])


def work_bare_amqp(recorder: Recorder, concurrency: int) -> None:
    """aio-pika consuming with prefetch `concurrency`, acknowledging each message."""
    import aio_pika  # noqa: PLC0415
    from aio_pika.abc import AbstractIncomingMessage  # noqa: PLC0415

    async def consume() -> None:
        connection = await aio_pika.connect(amqp_url())
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=concurrency)
        queue = await channel.declare_queue(queue_name(), durable=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            recorder.started(sent_of(message.body))
            await message.ack()

        await queue.consume(on_message)
        while not recorder.done.is_set():
            await asyncio.sleep(0.05)
        await connection.close()

    asyncio.run(consume())


# ---- workerfleet: the worker runtime as a pool's worker runs it (policy, metrics, JSON logs)


def work_workerfleet(backend_kind: str) -> Callable[[Recorder, int], None]:
    def work(recorder: Recorder, concurrency: int) -> None:
        from workerfleet.api.credentials import Credentials  # noqa: PLC0415
        from workerfleet.api.jobtype import JobTypeSpec  # noqa: PLC0415
        from workerfleet.api.workerpool import RabbitMQ, RedisList, RedisStream  # noqa: PLC0415
        from workerfleet.worker import event_loop, jsonlog  # noqa: PLC0415
        from workerfleet.worker.backend import QueueBackend  # noqa: PLC0415
        from workerfleet.worker.handlers import Job  # noqa: PLC0415
        from workerfleet.worker.metrics import WorkerMetrics  # noqa: PLC0415
        from workerfleet.worker.runtime import Runtime  # noqa: PLC0415

        # Logs formatted as in production, then discarded, so their cost is in the numbers.
        jsonlog.configure("INFO", open(os.devnull, "w"))  # noqa: SIM115  (lives as long as the process)
        spec = JobTypeSpec.model_validate({"lane": "fast", "timeoutSeconds": 30})
        address = os.environ["BENCH_REDIS"]
        backend: QueueBackend
        # Only the backend in use is imported, as a pool's worker does (start-up counts).
        if backend_kind == "list":
            from workerfleet.worker.redis_list import RedisListBackend  # noqa: PLC0415

            backend = RedisListBackend(
                RedisList.model_validate({"address": address, "list": queue_name()}),
                Credentials(),
                "bench",
                heartbeat_seconds=15,
            )
        elif backend_kind == "stream":
            from workerfleet.worker.redis_stream import RedisStreamBackend  # noqa: PLC0415

            backend = RedisStreamBackend(
                RedisStream.model_validate(
                    {"address": address, "stream": queue_name(), "consumerGroup": "bench"}
                ),
                Credentials(),
                "bench",
                reclaim_idle_seconds=60,
                reclaim_interval_seconds=30,
            )
        else:
            from workerfleet.worker.rabbitmq import RabbitMQBackend  # noqa: PLC0415

            backend = RabbitMQBackend(
                RabbitMQ.model_validate({"address": os.environ["BENCH_AMQP"], "queue": queue_name()}),
                Credentials(),
                prefetch=concurrency,
            )

        async def noop(job: Job) -> None:
            recorder.started(job.payload["sent"])

        async def consume() -> None:
            runtime = Runtime(
                backend=backend,
                policies={"noop": spec},
                handlers={"noop": noop},
                metrics=WorkerMetrics("bench", "bench", ["noop"]),
                pool="bench",
                revision="bench",
                worker_id="bench",
                concurrency=concurrency,
                drain_seconds=5,
                pool_dead_letter_queue=f"{queue_name()}.dlq",
                maintenance_interval_seconds=5,
            )
            stop = asyncio.Event()
            running = asyncio.create_task(runtime.run(stop))
            while not recorder.done.is_set():
                await asyncio.sleep(0.05)
            stop.set()
            await running

        event_loop.run(consume())  # as the worker runs: on uvloop where the speedups extra is installed

    return work


def produce_workerfleet(backend_kind: str) -> Callable[[list[float]], None]:
    def produce(times: list[float]) -> None:
        import redis  # noqa: PLC0415

        if backend_kind == "rabbitmq":
            produce_amqp(times)
            return
        host, port = redis_host_port()
        client = redis.Redis(host=host, port=port)
        key = queue_name()
        for batch in paced(times):
            with client.pipeline(transaction=False) as pipe:
                for sent in batch:
                    if backend_kind == "stream":
                        pipe.xadd(key, {"job": envelope_body(sent)})
                    else:
                        pipe.lpush(key, envelope_body(sent))
                pipe.execute()

    return produce


def produce_amqp(times: list[float]) -> None:
    import aio_pika  # noqa: PLC0415

    async def publish() -> None:
        connection = await aio_pika.connect(amqp_url())
        channel = await connection.channel(publisher_confirms=False)
        await channel.declare_queue(queue_name(), durable=True)
        for batch in paced(times):
            for sent in batch:
                await channel.default_exchange.publish(
                    aio_pika.Message(envelope_body(sent), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue_name(),
                )
        await connection.close()

    asyncio.run(publish())


def produce_bare_xreadgroup(times: list[float]) -> None:
    import redis  # noqa: PLC0415

    host, port = redis_host_port()
    client = redis.Redis(host=host, port=port)
    with contextlib.suppress(redis.ResponseError):  # the group exists
        client.xgroup_create(queue_name(), "bench", id="0", mkstream=True)
    produce_workerfleet("stream")(times)


# ---- the peers, each configured for at-least-once delivery where it offers it


def celery_app() -> Any:
    from celery import Celery  # noqa: PLC0415

    app = Celery("bench", broker=redis_url())
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=queue_name(),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


def work_celery(recorder: Recorder, concurrency: int) -> None:
    app = celery_app()

    @app.task(name="noop")
    def noop(sent: float) -> None:
        recorder.started(sent)

    worker = app.Worker(
        pool="solo" if concurrency == 1 else "threads",
        concurrency=concurrency,
        loglevel="WARNING",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        quiet=True,
    )
    threading.Thread(
        target=lambda: (recorder.done.wait(WORK_LIMIT_SECONDS), os._exit(0)), daemon=True
    ).start()
    worker.start()


def produce_celery(times: list[float]) -> None:
    app = celery_app()
    for batch in paced(times):
        for sent in batch:
            app.send_task("noop", args=[sent])


def work_rq(recorder: Recorder, concurrency: int) -> None:
    """RQ runs one job at a time per worker process: concurrency above 1 is not offered in one process."""
    from redis import Redis  # noqa: PLC0415
    from rq import Queue, SimpleWorker  # noqa: PLC0415

    # RQ calls a module-level function by name, importing this module anew (it runs as __main__).
    setattr(importlib.import_module("bench.peer_worker"), "RQ_RECORDER", recorder)  # noqa: B010
    host, port = redis_host_port()
    connection = Redis(host=host, port=port)
    worker = SimpleWorker([Queue(queue_name(), connection=connection)], connection=connection)
    threading.Thread(
        target=lambda: (recorder.done.wait(WORK_LIMIT_SECONDS), os._exit(0)), daemon=True
    ).start()
    worker.work(with_scheduler=False, logging_level="WARNING")


RQ_RECORDER: Recorder | None = None


def rq_noop(sent: float) -> None:
    assert RQ_RECORDER is not None
    RQ_RECORDER.started(sent)


def produce_rq(times: list[float]) -> None:
    from redis import Redis  # noqa: PLC0415
    from rq import Queue  # noqa: PLC0415

    host, port = redis_host_port()
    queue = Queue(queue_name(), connection=Redis(host=host, port=port))
    for batch in paced(times):
        for sent in batch:
            queue.enqueue("bench.peer_worker.rq_noop", sent, result_ttl=0)


def dramatiq_broker(kind: str) -> Any:
    import dramatiq  # noqa: PLC0415

    if kind == "redis":
        from dramatiq.brokers.redis import RedisBroker  # noqa: PLC0415

        broker: Any = RedisBroker(url=redis_url())
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: PLC0415

        broker = RabbitmqBroker(url=amqp_url())
    dramatiq.set_broker(broker)
    return broker


def dramatiq_actor(kind: str, recorder: Recorder | None) -> Any:
    import dramatiq  # noqa: PLC0415

    dramatiq_broker(kind)

    @dramatiq.actor(actor_name="noop", queue_name=queue_name(), max_retries=3)
    def noop(sent: float) -> None:
        if recorder is not None:
            recorder.started(sent)

    return noop


def work_dramatiq(kind: str) -> Callable[[Recorder, int], None]:
    def work(recorder: Recorder, concurrency: int) -> None:
        import dramatiq  # noqa: PLC0415

        dramatiq_actor(kind, recorder)
        worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=concurrency, worker_timeout=100)
        worker.start()
        recorder.done.wait(WORK_LIMIT_SECONDS)
        os._exit(0)

    return work


def produce_dramatiq(kind: str) -> Callable[[list[float]], None]:
    def produce(times: list[float]) -> None:
        actor = dramatiq_actor(kind, None)
        for batch in paced(times):
            for sent in batch:
                actor.send(sent)
        actor.broker.close()

    return produce


def work_arq(recorder: Recorder, concurrency: int) -> None:
    from arq.connections import RedisSettings  # noqa: PLC0415
    from arq.worker import Worker, func  # noqa: PLC0415

    async def noop(ctx: dict[str, Any], sent: float) -> None:
        recorder.started(sent)

    host, port = redis_host_port()

    async def consume() -> None:
        worker = Worker(
            functions=[func(noop, name="noop")],
            redis_settings=RedisSettings(host=host, port=port),
            queue_name=queue_name(),
            max_jobs=concurrency,
            keep_result=0,
            handle_signals=False,
            poll_delay=ARQ_POLL_SECONDS,
        )
        running = asyncio.create_task(worker.async_run())
        while not recorder.done.is_set():
            await asyncio.sleep(0.05)
        running.cancel()

    asyncio.run(consume())


def produce_arq(times: list[float]) -> None:
    from arq.connections import RedisSettings, create_pool  # noqa: PLC0415

    host, port = redis_host_port()

    async def enqueue() -> None:
        pool = await create_pool(RedisSettings(host=host, port=port))
        for batch in paced(times):
            for sent in batch:
                await pool.enqueue_job("noop", sent, _queue_name=queue_name())
        await pool.aclose()

    asyncio.run(enqueue())


def work_saq(recorder: Recorder, concurrency: int) -> None:
    from saq import Queue, Worker  # noqa: PLC0415

    async def noop(ctx: dict[str, Any], *, sent: float) -> None:
        recorder.started(sent)

    async def consume() -> None:
        queue = Queue.from_url(redis_url(), name=queue_name())
        worker = Worker(queue, functions=[("noop", noop)], concurrency=concurrency)
        running = asyncio.create_task(worker.start())
        while not recorder.done.is_set():
            await asyncio.sleep(0.05)
        running.cancel()

    asyncio.run(consume())


def produce_saq(times: list[float]) -> None:
    from saq import Queue  # noqa: PLC0415

    async def enqueue() -> None:
        queue = Queue.from_url(redis_url(), name=queue_name())
        await queue.connect()
        for batch in paced(times):
            for sent in batch:
                await queue.enqueue("noop", sent=sent, retries=3)
        await queue.disconnect()

    asyncio.run(enqueue())


def paced(times: list[float]) -> Iterator[list[float]]:
    """The jobs in batches as they fall due (`times`: offsets in seconds from now), each batch as the
    wall-clock times it is sent at; all at once (in batches of PREFILL_BATCH) when every offset is 0."""
    start = time.time()
    index = 0
    while index < len(times):
        wait = start + times[index] - time.time()
        if wait > 0:
            time.sleep(min(wait, TICK_SECONDS))
        now = time.time()
        batch: list[float] = []
        while index < len(times) and start + times[index] <= now and len(batch) < PREFILL_BATCH:
            batch.append(now)
            index += 1
        if batch:
            yield batch


WORKERS: dict[str, Callable[[Recorder, int], None]] = {
    "bare-brpop": work_bare_brpop,
    "bare-xreadgroup": work_bare_xreadgroup,
    "bare-amqp": work_bare_amqp,
    "workerfleet-list": work_workerfleet("list"),
    "workerfleet-list-uvloop": work_workerfleet("list"),
    "workerfleet-stream": work_workerfleet("stream"),
    "workerfleet-stream-uvloop": work_workerfleet("stream"),
    "workerfleet-rabbitmq": work_workerfleet("rabbitmq"),
    "workerfleet-rabbitmq-uvloop": work_workerfleet("rabbitmq"),
    "celery": work_celery,
    "rq": work_rq,
    "dramatiq-redis": work_dramatiq("redis"),
    "dramatiq-rabbitmq": work_dramatiq("rabbitmq"),
    "arq": work_arq,
    "saq": work_saq,
}

PRODUCERS: dict[str, Callable[[list[float]], None]] = {
    "bare-brpop": produce_workerfleet("list"),
    "bare-xreadgroup": produce_bare_xreadgroup,
    "bare-amqp": produce_amqp,
    "workerfleet-list": produce_workerfleet("list"),
    "workerfleet-list-uvloop": produce_workerfleet("list"),
    "workerfleet-stream": produce_workerfleet("stream"),
    "workerfleet-stream-uvloop": produce_workerfleet("stream"),
    "workerfleet-rabbitmq": produce_workerfleet("rabbitmq"),
    "workerfleet-rabbitmq-uvloop": produce_workerfleet("rabbitmq"),
    "celery": produce_celery,
    "rq": produce_rq,
    "dramatiq-redis": produce_dramatiq("redis"),
    "dramatiq-rabbitmq": produce_dramatiq("rabbitmq"),
    "arq": produce_arq,
    "saq": produce_saq,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["work", "produce"])
    parser.add_argument("contender", choices=sorted(WORKERS))
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--expect", type=int, default=1)
    parser.add_argument("--result", type=Path)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="jobs per second; 0: all at once")
    args = parser.parse_args()
    if args.mode == "produce":
        times = [n / args.rate if args.rate > 0 else 0.0 for n in range(args.count)]
        PRODUCERS[args.contender](times)
        return
    WORKERS[args.contender](Recorder(args.expect, args.result), args.concurrency)


if __name__ == "__main__":
    main()
