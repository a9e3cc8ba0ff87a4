"""The consume loop against an in-memory backend: what each kind of job ends as, and drain."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.worker.fakes import MemoryBackend, run_async
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.worker import NeedsReview, PermanentError, PolicyError, TransientError
from workerfleet.worker.envelope import decode, encode, new_envelope
from workerfleet.worker.handlers import Handler, Job
from workerfleet.worker.metrics import WorkerMetrics
from workerfleet.worker.producer import enqueue
from workerfleet.worker.runtime import Runtime, build_validators
from workerfleet.worker.settings import ConfigurationError

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SPEC = JobTypeSpec.model_validate(
    {
        "lane": "fast",
        "timeoutSeconds": 1,
        "deadlineSeconds": 600,
        "input": {"schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}},
        "retry": {
            "maxAttempts": 3,
            "backoff": {"initialSeconds": 2, "maxSeconds": 60, "multiplier": 2, "jitter": 0},
        },
        "deadLetter": {"queue": "work.dlq"},
        "review": {"queue": "work.review"},
        "idempotency": {"keyField": "id", "ttlSeconds": 3600},
    }
)


class Harness:
    def __init__(
        self, handler: Handler, *, concurrency: int = 1, drain_seconds: float = 5.0, spec: JobTypeSpec = SPEC
    ) -> None:
        self.backend = MemoryBackend()
        self.metrics = WorkerMetrics("thumbs", "rev-1")
        self.runtime = Runtime(
            backend=self.backend,
            policies={"work": spec},
            handlers={"work": handler},
            metrics=self.metrics,
            pool="thumbs",
            revision="rev-1",
            worker_id="worker-1",
            concurrency=concurrency,
            drain_seconds=drain_seconds,
            pool_dead_letter_queue="pool.dlq",
            maintenance_interval_seconds=0.05,
            clock=lambda: NOW,
            sample=lambda: 0.0,
        )

    async def put(
        self,
        payload: Any,
        *,
        attempt: int = 1,
        age_seconds: float = 0,
        job_type: str = "work",
        deadline_seconds: int | None = None,
    ) -> str:
        envelope = new_envelope(
            job_type, payload, now=NOW - timedelta(seconds=age_seconds), deadline_seconds=deadline_seconds
        )
        await self.backend.enqueue(encode(envelope.model_copy(update={"attempt": attempt})))
        return envelope.id

    async def run_until(self, settled: int, *, timeout: float = 5.0) -> None:
        """Run the loop until `settled` deliveries are settled, then stop it (bounded by `timeout`)."""
        stop = asyncio.Event()
        loop = asyncio.create_task(self.runtime.run(stop))
        deadline = asyncio.get_running_loop().time() + timeout
        while self.backend.settled < settled and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.wait_for(loop, timeout=timeout)
        assert self.backend.settled >= settled, "the runtime did not settle the jobs in time"

    def count(self, outcome: str, job_type: str = "work") -> float:
        value = self.metrics.registry.get_sample_value(
            "workerfleet_jobs_total",
            {"pool": "thumbs", "revision": "rev-1", "job_type": job_type, "outcome": outcome},
        )
        return value or 0.0

    def failures(self, outcome: str, failure_class: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "workerfleet_job_failures_total",
            {
                "pool": "thumbs",
                "revision": "rev-1",
                "job_type": "work",
                "outcome": outcome,
                "failure_class": failure_class,
            },
        )
        return value or 0.0


def recording(calls: list[Job], behaviour: Callable[[Job], Awaitable[None]] | None = None) -> Handler:
    async def handle(job: Job) -> None:
        calls.append(job)
        if behaviour is not None:
            await behaviour(job)

    return handle


@run_async
async def test_a_good_job_runs_once_and_is_completed_with_its_key() -> None:
    calls: list[Job] = []
    harness = Harness(recording(calls))
    await harness.put({"id": "a"})
    await harness.run_until(1)
    assert [job.payload for job in calls] == [{"id": "a"}]
    assert len(harness.backend.completed) == 1
    assert harness.backend.completed_keys == {"work:a"}
    assert harness.count("succeeded") == 1
    assert harness.backend.closed


@run_async
async def test_an_invalid_payload_is_dead_lettered_with_the_reason_and_never_run() -> None:
    calls: list[Job] = []
    harness = Harness(recording(calls))
    await harness.put({"id": 7})
    await harness.run_until(1)
    assert calls == []
    [(queue, body)] = harness.backend.moved
    dead = decode(body)
    assert queue == "work.dlq"
    assert dead.last_failure is not None
    assert dead.last_failure.reason == "ValidationFailed"
    assert "$.id" in dead.last_failure.message
    assert (dead.last_failure.pool, dead.last_failure.revision) == ("thumbs", "rev-1")
    assert harness.count("dead_lettered") == 1


@run_async
async def test_transient_failures_retry_with_backoff_then_dead_letter_when_attempts_run_out() -> None:
    async def fail(job: Job) -> None:
        raise TransientError("upstream 503")

    harness = Harness(recording([], fail))
    await harness.put({"id": "a"}, attempt=1)
    await harness.put({"id": "b"}, attempt=2)
    await harness.put({"id": "c"}, attempt=3)
    await harness.run_until(3)
    assert [(decode(body).attempt, delay) for body, delay in harness.backend.retried] == [(2, 2.0), (3, 4.0)]
    retried = decode(harness.backend.retried[0][0])
    assert retried.last_failure is not None
    assert (retried.last_failure.failure_class, retried.last_failure.attempt) == ("transient", 1)
    [(queue, body)] = harness.backend.moved
    assert queue == "work.dlq"
    assert decode(body).last_failure.reason == "AttemptsExhausted"  # type: ignore[union-attr]
    assert (harness.count("retried"), harness.count("dead_lettered")) == (2, 1)
    assert (harness.failures("retried", "transient"), harness.failures("dead_lettered", "transient")) == (
        2,
        1,
    )


@run_async
async def test_failures_are_counted_by_class_and_those_without_one_are_left_out() -> None:
    # Given a handler that fails by the payload: policy, permanent (no class), and an invalid payload
    async def fail(job: Job) -> None:
        raise (PolicyError("quota") if job.payload["id"] == "quota" else PermanentError("gone"))

    harness = Harness(recording([], fail))
    await harness.put({"id": "quota"})
    await harness.put({"id": "gone"})
    await harness.put({"no-id": True})
    await harness.run_until(3)
    # Then each ends dead-lettered, and only the classified failures are in the class counter
    assert harness.count("dead_lettered") == 3
    assert harness.failures("dead_lettered", "policy") == 1
    assert harness.failures("dead_lettered", "validation") == 1
    assert sum(harness.failures("dead_lettered", name) for name in ("transient", "unknown", "timeout")) == 0


@run_async
async def test_a_permanent_error_is_dead_lettered_on_the_first_attempt() -> None:
    async def fail(job: Job) -> None:
        raise PermanentError("no such image")

    harness = Harness(recording([], fail))
    await harness.put({"id": "a"})
    await harness.run_until(1)
    [(queue, body)] = harness.backend.moved
    failure = decode(body).last_failure
    assert failure is not None
    assert (queue, failure.reason, failure.message) == (
        "work.dlq",
        "PermanentError",
        "PermanentError: no such image",
    )


@run_async
async def test_an_unclassified_exception_is_retried_as_unknown() -> None:
    async def fail(job: Job) -> None:
        raise KeyError("width")

    harness = Harness(recording([], fail))
    await harness.put({"id": "a"})
    await harness.run_until(1)
    [(body, _delay)] = harness.backend.retried
    failure = decode(body).last_failure
    assert failure is not None
    assert (failure.failure_class, failure.message) == ("unknown", "KeyError: 'width'")


@run_async
async def test_a_handler_that_waits_on_io_before_it_fails_is_retried_with_its_failure() -> None:
    """Handlers that finish without waiting run without a task of their own; those that wait go on in
    one, with what they raise after the wait still theirs."""
    steps: list[str] = []

    async def wait_then_fail(job: Job) -> None:
        steps.append("before")
        await asyncio.sleep(0.01)
        steps.append("after")
        raise TransientError("upstream 503")

    harness = Harness(recording([], wait_then_fail))
    await harness.put({"id": "a"})
    await harness.run_until(1)
    assert steps == ["before", "after"]
    [(body, _delay)] = harness.backend.retried
    failure = decode(body).last_failure
    assert failure is not None
    assert (failure.failure_class, failure.message) == ("transient", "TransientError: upstream 503")


@run_async
async def test_an_attempt_past_timeout_seconds_is_cancelled_and_retried_as_a_timeout() -> None:
    cancelled = asyncio.Event()

    async def hang(job: Job) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    harness = Harness(recording([], hang))
    await harness.put({"id": "a"})
    await harness.run_until(1)
    assert cancelled.is_set()
    [(body, _delay)] = harness.backend.retried
    assert decode(body).last_failure.failure_class == "timeout"  # type: ignore[union-attr]


@run_async
async def test_sync_handlers_run_in_a_thread() -> None:
    seen: list[str] = []

    def handle(job: Job) -> None:
        seen.append(job.id)

    harness = Harness(handle)
    job_id = await harness.put({"id": "a"})
    await harness.run_until(1)
    assert seen == [job_id]
    assert harness.count("succeeded") == 1


@run_async
async def test_an_ambiguous_result_goes_to_the_review_queue() -> None:
    async def unsure(job: Job) -> None:
        raise NeedsReview("two faces found")

    harness = Harness(recording([], unsure))
    await harness.put({"id": "a"})
    await harness.run_until(1)
    [(queue, body)] = harness.backend.moved
    assert queue == "work.review"
    assert decode(body).last_failure.message == "two faces found"  # type: ignore[union-attr]
    assert harness.count("review") == 1


@run_async
async def test_a_job_past_its_deadline_expires_without_running() -> None:
    calls: list[Job] = []
    harness = Harness(recording(calls))
    await harness.put({"id": "a"}, age_seconds=601)
    await harness.run_until(1)
    assert calls == []
    [(queue, body)] = harness.backend.moved
    assert (queue, decode(body).last_failure.reason) == ("work.dlq", "DeadlineExceeded")  # type: ignore[union-attr]
    assert harness.count("expired") == 1


@pytest.mark.parametrize(
    ("age_seconds", "deadline_seconds", "runs"),
    [(61, 60, False), (59, 60, True), (601, 900, False), (599, 900, True)],
)
@run_async
async def test_a_job_deadline_of_its_own_only_shortens_the_job_types(
    age_seconds: int, deadline_seconds: int, runs: bool
) -> None:
    calls: list[Job] = []
    harness = Harness(recording(calls))
    await harness.put({"id": "a"}, age_seconds=age_seconds, deadline_seconds=deadline_seconds)
    await harness.run_until(1)
    assert bool(calls) is runs
    assert harness.count("expired") == (0 if runs else 1)


@run_async
async def test_a_job_whose_key_was_completed_is_acknowledged_without_running() -> None:
    calls: list[Job] = []
    harness = Harness(recording(calls))
    await harness.put({"id": "same"})
    await harness.put({"id": "same"})
    await harness.run_until(2)
    assert len(calls) == 1
    assert len(harness.backend.completed) == 2
    assert (harness.count("succeeded"), harness.count("duplicate")) == (1, 1)


@run_async
async def test_messages_that_are_not_envelopes_or_name_unknown_types_are_dead_lettered_never_dropped() -> (
    None
):
    calls: list[Job] = []
    no_dead_letter = SPEC.model_copy(update={"dead_letter": None})
    harness = Harness(recording(calls), spec=no_dead_letter)
    await harness.backend.enqueue(b"\x00garbage")
    stranger = await harness.put({"id": "a"}, job_type="someone-elses")
    await harness.run_until(2)
    assert calls == []
    (garbage_queue, garbage_body), (stranger_queue, stranger_body) = harness.backend.moved
    garbage = decode(garbage_body)
    assert (garbage_queue, garbage.type, garbage.payload) == (
        "pool.dlq",
        "(malformed)",
        {"original": "\x00garbage"},
    )
    assert garbage.last_failure is not None
    assert garbage.last_failure.reason == "MalformedEnvelope"
    unknown = decode(stranger_body)
    assert (stranger_queue, unknown.id, unknown.payload) == ("pool.dlq", stranger, {"id": "a"})
    assert unknown.last_failure is not None
    assert unknown.last_failure.reason == "UnknownJobType"
    assert harness.count("dead_lettered", job_type="") == 2
    assert harness.count("failed", job_type="") == 0


@run_async
async def test_the_loop_reconnects_after_the_queue_becomes_unreachable() -> None:
    calls: list[Job] = []
    harness = Harness(recording(calls))
    harness.backend.unavailable_receives = 2
    await harness.put({"id": "a"})
    await harness.run_until(1)
    assert len(calls) == 1
    assert harness.backend.connects == 3  # the first connect, then one after each failed receive


@run_async
async def test_drain_finishes_in_flight_jobs_and_takes_no_new_ones() -> None:
    started = asyncio.Event()

    async def slow(job: Job) -> None:
        started.set()
        await asyncio.sleep(0.3)

    harness = Harness(recording([], slow), drain_seconds=5)
    await harness.put({"id": "a"})
    stop = asyncio.Event()
    loop = asyncio.create_task(harness.runtime.run(stop))
    await asyncio.wait_for(started.wait(), 5)
    await harness.put({"id": "b"})
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert len(harness.backend.completed) == 1
    assert [json.loads(body)["payload"] for body in harness.backend.waiting] == [{"id": "b"}]


@run_async
async def test_drain_gives_back_jobs_that_cannot_finish_in_time() -> None:
    started = asyncio.Event()

    async def hang(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    # A long timeout, so the drain time (not the attempt's timeout) is what ends the attempt.
    long_timeout = SPEC.model_copy(update={"timeout_seconds": 60})
    harness = Harness(recording([], hang), drain_seconds=0.2, spec=long_timeout)
    job_id = await harness.put({"id": "a"})
    stop = asyncio.Event()
    loop = asyncio.create_task(harness.runtime.run(stop))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert [decode(body).id for body in harness.backend.released] == [job_id]
    assert decode(harness.backend.released[0]).attempt == 1
    assert (harness.backend.completed, harness.backend.retried) == ([], [])


@run_async
async def test_a_copy_whose_key_another_worker_claimed_is_deferred_not_run_nor_counted() -> None:
    calls: list[Job] = []
    harness = Harness(recording(calls))
    harness.backend.claims["work:busy"] = "worker-2"
    await harness.put({"id": "busy"})
    await harness.run_until(1)
    assert calls == []
    [(body, delay)] = harness.backend.deferred
    assert decode(body).attempt == 1  # given back as it came: not an attempt
    assert 1.0 <= delay <= 30.0
    assert (harness.backend.retried, harness.backend.moved) == ([], [])
    outcomes = ("succeeded", "duplicate", "retried", "dead_lettered", "failed", "expired")
    assert [harness.count(outcome) for outcome in outcomes] == [0] * len(outcomes)
    assert harness.backend.claims == {"work:busy": "worker-2"}, "another worker's claim is not ours to end"


@run_async
async def test_two_copies_of_a_keyed_job_in_one_process_do_not_run_side_by_side() -> None:
    """The backend lets a worker take over its own claim, so the process keeps its copies apart."""
    calls: list[Job] = []

    async def slow(job: Job) -> None:
        await asyncio.sleep(0.1)

    harness = Harness(recording(calls, slow), concurrency=2)
    await harness.put({"id": "same"})
    await harness.put({"id": "same"})
    await harness.run_until(2)
    assert len(calls) == 1
    assert len(harness.backend.completed) == 1
    assert len(harness.backend.deferred) == 1
    assert harness.backend.claims == {}, "completing the job ends its claim"


@run_async
async def test_a_failed_keyed_attempt_releases_its_claim_so_the_retry_can_run_anywhere() -> None:
    async def fail(job: Job) -> None:
        raise TransientError("upstream 503")

    harness = Harness(recording([], fail))
    await harness.put({"id": "flaky"})
    await harness.run_until(1)
    assert len(harness.backend.retried) == 1
    assert harness.backend.claims == {}


@run_async
async def test_a_worker_takes_over_its_own_claim_left_from_an_earlier_attempt_or_process() -> None:
    calls: list[Job] = []
    harness = Harness(recording(calls))
    harness.backend.claims["work:mine"] = "worker-1"  # this worker's id, e.g. before a restart in place
    await harness.put({"id": "mine"}, attempt=2)
    await harness.run_until(1)
    assert len(calls) == 1
    assert harness.backend.completed_keys == {"work:mine"}
    assert harness.backend.claims == {}


@run_async
async def test_a_late_keyed_job_expires_and_releases_its_claim() -> None:
    harness = Harness(recording([]))
    await harness.put({"id": "late"}, age_seconds=601)
    await harness.run_until(1)
    assert harness.count("expired") == 1
    assert harness.backend.claims == {}


@run_async
async def test_jobs_without_an_idempotency_key_never_ask_for_a_claim() -> None:
    unkeyed = SPEC.model_copy(update={"idempotency": None})
    harness = Harness(recording([]), spec=unkeyed)
    await harness.put({"id": "a"})
    await harness.put({"id": "a"})
    await harness.run_until(2)
    assert harness.count("succeeded") == 2
    assert harness.backend.claims_asked == []


@run_async
async def test_concurrency_runs_jobs_side_by_side() -> None:
    running = 0
    peak = 0

    async def track(job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    harness = Harness(recording([], track), concurrency=4)
    for index in range(8):
        await harness.put({"id": str(index)})
    await harness.run_until(8)
    assert peak == 4
    assert harness.count("succeeded") == 8


@run_async
async def test_enqueue_puts_a_first_attempt_envelope_on_the_queue() -> None:
    backend = MemoryBackend()
    envelope = await enqueue(backend, "work", {"id": "a"}, job_id="j1", enqueued_at=NOW)
    assert decode(backend.waiting[0]) == envelope
    assert (envelope.id, envelope.attempt, envelope.enqueued_at) == ("j1", 1, NOW)


def test_a_broken_input_schema_stops_the_start() -> None:
    broken = SPEC.model_copy(update={"input": SPEC.input.model_copy(update={"payload_schema": {"type": 5}})})  # type: ignore[union-attr]
    with pytest.raises(ConfigurationError, match="not a valid JSON Schema"):
        build_validators({"work": broken})
