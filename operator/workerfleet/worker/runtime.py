"""The consume loop: take jobs, apply the JobType's policy, run handlers, settle, drain on shutdown.

Facts are gathered here and decisions come from `policy` (pure). Every delivery is settled exactly once
(complete, retry, move or release) unless the process dies first, in which case the backend's recovery
hands the job to another worker. Shutdown (the `stop` event, set on SIGTERM) stops taking jobs, gives
in-flight ones up to the drain time to finish, then gives the rest back unfinished, as they were.
Everything after the drain time is bounded (STOP_MARGIN_SECONDS in all), also when the queue server
stops answering, so the worker is gone before the pod's grace period ends in a SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from workerfleet.api.jobtype import FailureClass, JobTypeSpec
from workerfleet.api.worker_contract import Outcome
from workerfleet.worker.backend import (
    BackendUnavailable,
    ClaimAnswer,
    CompletedKey,
    Delivery,
    DeliveryLost,
    DestinationRefused,
    KeyClaim,
    KeyState,
    QueueBackend,
)
from workerfleet.worker.breaker import BreakerGate
from workerfleet.worker.envelope import (
    DEFAULT_LIMITS,
    Envelope,
    FailureRecord,
    MalformedEnvelope,
    MessageLimits,
    MessageTooLarge,
    NestingTooDeep,
    decode,
    encode,
    quarantine,
    with_failure,
)
from workerfleet.worker.errors import JobError, NeedsReview
from workerfleet.worker.handlers import Handler, Job
from workerfleet.worker.health import Health
from workerfleet.worker.metrics import UNSERVED_JOB_TYPE, WorkerMetrics
from workerfleet.worker.policy import (
    Complete,
    Decision,
    Defer,
    Failure,
    FailureReason,
    Remove,
    RetryLater,
    admit,
    after_failure,
    after_review_request,
    claim_lease_seconds,
    crashed_too_often,
    dead_letter_queue,
    give_up,
    idempotency_key,
    reject_invalid,
    with_job_deadline,
)
from workerfleet.worker.rate_limit import Pacer
from workerfleet.worker.settings import ConfigurationError

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

log = logging.getLogger("workerfleet.worker")

RECEIVE_WAIT_SECONDS = 1.0
"""Longest a receive blocks: bounds how long a stop request waits for the consume loop to notice."""
RECONNECT_INITIAL_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 15.0
CANCEL_GRACE_SECONDS = 5.0
"""How long a cancelled async handler may take to unwind before the runtime moves on without it."""
RELEASE_GRACE_SECONDS = 4.0
"""After the drain time and the cancel grace, how long giving back the unfinished jobs may take; jobs
still not given back then are left to the backend's recovery."""
FAREWELL_SECONDS = 2.0
"""How long each call that ends consuming (stop receiving, close) may wait for the queue server."""
STOP_MARGIN_SECONDS = (
    RECEIVE_WAIT_SECONDS + FAREWELL_SECONDS + CANCEL_GRACE_SECONDS + RELEASE_GRACE_SECONDS + FAREWELL_SECONDS
)
"""The most a stop takes beyond the drain time: noticing it (a receive under way gets its own wait
once more), stopping the receiving, giving back, closing. Less than the margin the pod's grace period
adds to the drain time."""
GIVE_BACK_SECONDS_WITHOUT_POLICY = 60.0
"""How long a job whose destination refused it waits before another try, when no JobType says
(malformed and unknown ones); JobTypes use their backoff's maxSeconds."""


@dataclass(frozen=True)
class Release:
    """Give the job back untouched (shutdown, or trouble before it ran)."""


@dataclass(frozen=True)
class _Succeeded:
    pass


@dataclass(frozen=True)
class _ReviewRequested:
    message: str


@dataclass(frozen=True)
class _Abandoned:
    pass


_AttemptResult = _Succeeded | Failure | _ReviewRequested | _Abandoned


class ReconnectBackoff:
    """Capped exponential delays with jitter between reconnect attempts: never a busy loop."""

    def __init__(self, sample: Callable[[], float]) -> None:
        self._sample = sample
        self._failures = 0

    def next_delay(self) -> float:
        base = min(RECONNECT_INITIAL_SECONDS * 2.0**self._failures, RECONNECT_MAX_SECONDS)
        self._failures += 1
        return base * (0.5 + 0.5 * self._sample())

    def reset(self) -> None:
        self._failures = 0


def utc_now() -> datetime:
    return datetime.now(UTC)


def build_validators(policies: Mapping[str, JobTypeSpec]) -> dict[str, Validator]:
    """A JSON Schema validator per job type with an input schema; a broken schema stops the start."""
    validators: dict[str, Validator] = {}
    if all(spec.input is None for spec in policies.values()):
        return validators
    # Imported only for JobTypes with an input schema: a worker without one starts without jsonschema.
    import jsonschema  # noqa: PLC0415

    from workerfleet.planners.job_type import input_schema_problem  # noqa: PLC0415

    for name, spec in policies.items():
        if spec.input is None:
            continue
        problem = input_schema_problem(spec)
        if problem is not None:
            raise ConfigurationError(f"job type {name!r}: {problem}")
        schema = spec.input.payload_schema
        validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        validators[name] = validator_class(schema)
    return validators


def input_problem(validator: Validator | None, spec: JobTypeSpec, payload: Any) -> str | None:
    """What is wrong with a job's payload for its JobType (schema, idempotency key), naming the field;
    None when it may run. Producers check with the same function before enqueueing."""
    if validator is not None:
        from jsonschema.exceptions import best_match  # noqa: PLC0415  (loaded with the validator)

        error = best_match(validator.iter_errors(payload))
        if error is not None:
            return f"payload does not match the input schema at {error.json_path}: {error.message}"
    if spec.idempotency is not None and idempotency_key(payload, spec.idempotency.key_field) is None:
        return f"payload has no idempotency key at {spec.idempotency.key_field} (a string or an integer)"
    return None


class _Continued:
    """A handler's coroutine whose first step already ran and stopped at `waiting_on`, awaited from where
    it stopped: what the awaiting task is sent or thrown (a cancel) goes on into the coroutine."""

    __slots__ = ("_coroutine", "_waiting_on")

    def __init__(self, coroutine: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self._coroutine = coroutine
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        coroutine, waiting_on = self._coroutine, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except BaseException as error:  # a cancel, thrown into the coroutine as a task would
                try:
                    waiting_on = coroutine.throw(error)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = coroutine.send(sent)
                except StopIteration:
                    return


async def _continue(continued: _Continued) -> None:
    await continued


class Runtime:
    """Consumes one backend with up to `concurrency` jobs at once."""

    def __init__(
        self,
        *,
        backend: QueueBackend,
        policies: Mapping[str, JobTypeSpec],
        handlers: Mapping[str, Handler],
        metrics: WorkerMetrics,
        pool: str,
        revision: str,
        worker_id: str,
        concurrency: int,
        drain_seconds: float,
        pool_dead_letter_queue: str,
        maintenance_interval_seconds: float,
        health: Health | None = None,
        limits: MessageLimits = DEFAULT_LIMITS,
        clock: Callable[[], datetime] = utc_now,
        sample: Callable[[], float] = random.random,
        breaker: BreakerGate | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self._backend = backend
        self._policies = dict(policies)
        self._handlers = dict(handlers)
        self._async_handlers: dict[Handler, bool] = {}
        self._validators = build_validators(policies)
        self._metrics = metrics
        self._health = health or Health(stall_seconds=float("inf"))
        self._health.policies_loaded(len(self._policies))
        self._pool = pool
        self._revision = revision
        self._worker_id = worker_id
        self._running_keys: set[str] = set()
        """Keys of the keyed jobs this process runs now: a second copy here waits without asking the
        backend (whose claims let a worker take over its own, for its retries and restarts)."""
        self._concurrency = concurrency
        self._drain_seconds = drain_seconds
        self._pool_dead_letter = pool_dead_letter_queue
        self._maintenance_interval = maintenance_interval_seconds
        self._limits = limits
        self._left_unsettled = 0
        """Deliveries an unexpected error left claimed: on RabbitMQ each holds a prefetch slot."""
        self._clock = clock
        self._sample = sample
        self._breaker = breaker
        self._pacer = pacer
        self._in_flight: set[asyncio.Task[None]] = set()
        """Every job taken and not yet settled (or given back): at most twice the concurrency."""
        self._in_slots: set[int] = set()
        """The deliveries (by id) still before their settle: at most `concurrency`. A job being settled
        gives its slot up, so the next batch is received while the last one's settles are on the wire."""
        self._slot_freed: asyncio.Future[None] | None = None
        self._abandon = asyncio.Event()
        self._abandon_future: asyncio.Future[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain. Returns once every job taken is settled or given back."""
        if not await self._connect(stop):
            return
        maintenance = asyncio.create_task(self._maintain_forever())
        try:
            await self._consume(stop)
            await self._drain()
        finally:
            maintenance.cancel()
            await asyncio.gather(maintenance, return_exceptions=True)
            try:
                await asyncio.wait_for(self._backend.close(), FAREWELL_SECONDS)
            except (BackendUnavailable, TimeoutError) as error:
                log.warning(
                    "could not close the queue cleanly; held jobs recover by timeout",
                    extra={"error": str(error) or f"no answer within {FAREWELL_SECONDS}s"},
                )
        log.info("worker stopped")

    async def _connect(self, stop: asyncio.Event) -> bool:
        backoff = ReconnectBackoff(self._sample)
        while not stop.is_set():
            self._health.beat()
            try:
                await self._backend.connect()
            except BackendUnavailable as error:
                delay = backoff.next_delay()
                log.warning(
                    "queue unreachable", extra={"error": str(error), "retry_in_seconds": round(delay, 2)}
                )
                await _sleep_unless(stop, delay)
                continue
            self._health.connected(True)
            log.info("connected to the queue", extra={"concurrency": self._concurrency})
            return True
        return False

    async def _maintain_forever(self) -> None:
        while True:
            await asyncio.sleep(self._maintenance_interval)
            try:
                await self._backend.maintain()
            except BackendUnavailable as error:
                log.warning("queue upkeep failed", extra={"error": str(error)})
            except Exception:
                log.exception("queue upkeep failed")

    async def _consume(self, stop: asyncio.Event) -> None:
        backoff = ReconnectBackoff(self._sample)
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._health.beat()
                free = self._free_slots()
                if free <= 0:
                    woken: set[asyncio.Future[Any]] = {self._next_free_slot(), stopped}
                    await asyncio.wait(
                        woken,
                        timeout=RECEIVE_WAIT_SECONDS,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    continue
                if self._breaker is not None:
                    free = self._breaker.allowance(free)
                    if free <= 0:  # the pool's circuit breaker is open: take nothing, finish what is held
                        await _sleep_unless(stop, RECEIVE_WAIT_SECONDS)
                        continue
                receiving = asyncio.create_task(self._backend.receive(free, RECEIVE_WAIT_SECONDS))
                await asyncio.wait({receiving, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    # A receive returns within its wait, unless the server went silent: then the
                    # client's timeouts would hold the stop for far longer than the drain time.
                    await asyncio.wait({receiving}, timeout=RECEIVE_WAIT_SECONDS)
                if not receiving.done():
                    receiving.cancel()
                    log.warning("queue not answering; stopped waiting for it")
                    break
                try:
                    deliveries = receiving.result()
                except BackendUnavailable as error:
                    self._health.connected(False)
                    delay = backoff.next_delay()
                    log.warning(
                        "queue unreachable; reconnecting",
                        extra={"error": str(error), "retry_in_seconds": round(delay, 2)},
                    )
                    await _sleep_unless(stop, delay)
                    if not stop.is_set():
                        await self._reconnect()
                    continue
                except Exception:
                    # A bug or a reply no one expected: never the end of the worker. Not ready meanwhile,
                    # and not live either once it lasts past the stall limit.
                    self._health.receiving(ok=False)
                    delay = backoff.next_delay()
                    log.exception("receiving failed", extra={"retry_in_seconds": round(delay, 2)})
                    await _sleep_unless(stop, delay)
                    continue
                backoff.reset()
                self._health.receiving(ok=True)
                self._health.connected(True)
                if self._breaker is not None:
                    self._breaker.took(len(deliveries))
                for delivery in deliveries:
                    self._take_slot(delivery)
        finally:
            stopped.cancel()

    def _free_slots(self) -> int:
        """How many jobs the next receive may take: the free handler slots, while the jobs held (running or
        being settled) stay within twice the concurrency, the read-ahead's bound."""
        return min(self._concurrency - len(self._in_slots), 2 * self._concurrency - len(self._in_flight))

    def _next_free_slot(self) -> asyncio.Future[None]:
        if self._slot_freed is None or self._slot_freed.done():
            self._slot_freed = asyncio.get_running_loop().create_future()
        return self._slot_freed

    def _take_slot(self, delivery: Delivery) -> None:
        key = id(delivery)
        self._in_slots.add(key)
        task = asyncio.create_task(self._process(delivery))
        self._in_flight.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._in_flight.discard(task)
            self._free_slot(key)

        task.add_done_callback(done)

    def _free_slot(self, key: int) -> None:
        self._in_slots.discard(key)
        if self._slot_freed is not None and not self._slot_freed.done():
            self._slot_freed.set_result(None)

    async def _reconnect(self) -> None:
        try:
            await self._backend.connect()
        except BackendUnavailable:
            return  # the next receive fails again and backs off further
        log.info("reconnected to the queue")

    async def _drain(self) -> None:
        self._health.draining()
        try:
            await asyncio.wait_for(self._backend.stop_receiving(), FAREWELL_SECONDS)
        except (BackendUnavailable, TimeoutError) as error:
            log.warning(
                "could not stop receiving; the queue server takes jobs back",
                extra={"error": str(error) or f"no answer within {FAREWELL_SECONDS}s"},
            )
        if not self._in_flight:
            return
        log.info(
            "draining",
            extra={"in_flight": len(self._in_flight), "drain_seconds": self._drain_seconds},
        )
        _, unfinished = await asyncio.wait(set(self._in_flight), timeout=self._drain_seconds)
        if unfinished:
            log.warning(
                "drain time is up; giving back unfinished jobs", extra={"unfinished": len(unfinished)}
            )
            self._give_up_draining()
            _, stuck = await asyncio.wait(unfinished, timeout=CANCEL_GRACE_SECONDS + RELEASE_GRACE_SECONDS)
            if stuck:
                # Waiting on a queue server that does not answer: the jobs stay held, and the backend's
                # recovery hands them to another worker.
                log.warning("queue unreachable; jobs left for recovery", extra={"unfinished": len(stuck)})
                for task in stuck:
                    task.cancel()

    async def _process(self, delivery: Delivery) -> None:
        """The one place a delivery's body is read: within the worker's bounds, and whatever happens,
        the delivery is settled or counted as left claimed (never a task dying unseen)."""
        envelope: Envelope | None = None
        try:
            try:
                envelope = decode(delivery.body, self._limits)
            except MalformedEnvelope as error:
                await self._dead_letter_unreadable(delivery, error)
                return
            served = envelope.type in self._policies
            gauge = self._metrics.in_flight_gauge(envelope.type if served else UNSERVED_JOB_TYPE)
            gauge.inc()
            try:
                await self._process_envelope(delivery, envelope)
            finally:
                gauge.dec()
        except Exception:
            # A bug or an unexpected server reply: the job stays claimed, so the backend's recovery
            # (heartbeat, pending-entry reclaim, broker redelivery) gives it to a worker again; once such
            # jobs hold every slot, the worker stops answering its liveness probe, so it is restarted.
            self._left_unsettled += 1
            self._health.left_unsettled(self._left_unsettled, self._concurrency)
            fields: dict[str, Any] = {}
            if envelope is not None:
                fields = {"job_id": envelope.id, "job_type": envelope.type, "attempt": envelope.attempt}
            log.exception("job left unsettled after an unexpected error", extra=fields)

    async def _dead_letter_unreadable(self, delivery: Delivery, error: MalformedEnvelope) -> None:
        """Never deleted: dead-lettered on its first delivery, wrapped in an envelope that keeps the
        original bytes, with the reason naming the bound it broke."""
        reason = FailureReason.MALFORMED_ENVELOPE
        if isinstance(error, MessageTooLarge):
            reason = FailureReason.MESSAGE_TOO_LARGE
        elif isinstance(error, NestingTooDeep):
            reason = FailureReason.NESTING_TOO_DEEP
        await self._settle(
            delivery,
            quarantine(delivery.body, now=self._clock(), limits=self._limits),
            give_up(reason, self._pool_dead_letter),
            job_type=UNSERVED_JOB_TYPE,
            failure=Failure(None, str(error)),
        )

    async def _process_envelope(self, delivery: Delivery, envelope: Envelope) -> None:
        spec = self._policies.get(envelope.type)
        handler = self._handlers.get(envelope.type)
        if spec is None or handler is None:
            problem = (
                "the pool serves no such job type" if spec is None else "this worker has no handler for it"
            )
            # Dead-lettered, never dropped: to the JobType's queue when the pool serves the type (this
            # worker's image lacks the handler), else to the pool's own dead-letter queue.
            dead_letter = (dead_letter_queue(spec) if spec is not None else None) or self._pool_dead_letter
            await self._settle(
                delivery,
                envelope,
                give_up(FailureReason.UNKNOWN_JOB_TYPE, dead_letter),
                job_type=UNSERVED_JOB_TYPE,
                failure=Failure(None, f"job type {envelope.type!r}: {problem}"),
            )
            return
        spec = with_job_deadline(spec, envelope.deadline_seconds)
        crashed = crashed_too_often(delivery.deliveries, spec)
        if crashed is not None:
            lost = delivery.deliveries - 1
            await self._settle(
                delivery,
                envelope,
                crashed,
                failure=Failure(None, f"its worker died during each of its last {lost} deliveries"),
            )
            return
        invalid = self._validation_problem(envelope, spec)
        if invalid is not None:
            await self._settle(
                delivery, envelope, reject_invalid(spec), failure=Failure(FailureClass.VALIDATION, invalid)
            )
            return
        completed_key = self._completed_key(envelope, spec)
        claim = self._claim_for(completed_key, spec)
        try:
            answer = await self._claim(claim) if claim is not None else None
        except BackendUnavailable:
            await self._settle(delivery, envelope, Release())
            return
        admission = admit(
            age_seconds=self._age_seconds(envelope),
            deadline_seconds=spec.deadline_seconds,
            already_completed=answer is not None and answer.state is KeyState.COMPLETED,
            dead_letter=dead_letter_queue(spec),
            claimed_elsewhere_for=(
                answer.held_for_seconds if answer is not None and answer.state is KeyState.HELD else None
            ),
        )
        if claim is None or answer is None or answer.state is not KeyState.CLAIMED:
            await self._admit_and_run(
                delivery, envelope, spec, handler, admission=admission, completed_key=completed_key
            )
            return
        completed = False
        try:
            completed = await self._admit_and_run(
                delivery, envelope, spec, handler, admission=admission, completed_key=completed_key
            )
        finally:
            self._running_keys.discard(claim.key)
            if not completed:
                await self._release_claim(claim, envelope)

    async def _admit_and_run(
        self,
        delivery: Delivery,
        envelope: Envelope,
        spec: JobTypeSpec,
        handler: Handler,
        *,
        admission: Decision | Defer | None,
        completed_key: CompletedKey | None,
    ) -> bool:
        """Settle a job not admitted, else run and settle it; whether it was completed (its key's claim
        ends with that)."""
        if admission is not None:
            failure = (
                Failure(None, f"enqueued more than deadlineSeconds ({spec.deadline_seconds}s) ago")
                if isinstance(admission, Remove)
                else None
            )
            await self._settle(delivery, envelope, admission, failure=failure)
            return False
        if self._pacer is not None and not await self._pacer.take_turn(envelope.type):
            await self._settle(delivery, envelope, Release())  # its JobType's rate limit cannot be asked
            return False
        started = time.monotonic()
        result = await self._attempt(handler, Job.from_envelope(envelope), spec.timeout_seconds)
        handler_seconds = time.monotonic() - started
        decision: Decision | Release
        failure_seen: Failure | None = None
        match result:
            case _Succeeded():
                decision = Complete(Outcome.SUCCEEDED)
            case _Abandoned():
                decision = Release()
            case _ReviewRequested(message=message):
                decision = after_review_request(spec)
                failure_seen = Failure(None, message)
            case Failure():
                failure_seen = result
                decision = after_failure(
                    result,
                    attempt=envelope.attempt,
                    age_seconds=self._age_seconds(envelope),
                    spec=spec,
                    jitter_sample=self._sample(),
                )
        await self._settle(
            delivery,
            envelope,
            decision,
            failure=failure_seen,
            completed_key=completed_key,
            handler_seconds=handler_seconds,
        )
        return isinstance(decision, Complete)

    def _age_seconds(self, envelope: Envelope) -> float:
        return (self._clock() - envelope.enqueued_at).total_seconds()

    def _validation_problem(self, envelope: Envelope, spec: JobTypeSpec) -> str | None:
        return input_problem(self._validators.get(envelope.type), spec, envelope.payload)

    def _completed_key(self, envelope: Envelope, spec: JobTypeSpec) -> CompletedKey | None:
        if spec.idempotency is None:
            return None
        value = idempotency_key(envelope.payload, spec.idempotency.key_field)
        return CompletedKey(f"{envelope.type}:{value}", spec.idempotency.ttl_seconds)

    def _claim_for(self, completed_key: CompletedKey | None, spec: JobTypeSpec) -> KeyClaim | None:
        if completed_key is None:
            return None
        lease = claim_lease_seconds(spec.timeout_seconds, CANCEL_GRACE_SECONDS)
        return KeyClaim(completed_key.key, self._worker_id, lease)

    async def _claim(self, claim: KeyClaim) -> ClaimAnswer:
        """Claim the key before the handler runs: in this process first (before any await, so two copies
        here cannot both pass), then on the backend, so two copies delivered at once (here, or to two
        workers) do not both run. A key claimed stays in `_running_keys` until its job is settled."""
        if claim.key in self._running_keys:
            return ClaimAnswer(KeyState.HELD, held_for_seconds=claim.lease_seconds)
        self._running_keys.add(claim.key)
        answer: ClaimAnswer | None = None
        try:
            answer = await self._backend.claim(claim)
        finally:
            if answer is None or answer.state is not KeyState.CLAIMED:
                self._running_keys.discard(claim.key)
        return answer

    async def _release_claim(self, claim: KeyClaim, envelope: Envelope) -> None:
        """The job was not completed: end its claim so a retry or another copy can run now. Bounded; a
        claim not released runs out with its lease."""
        try:
            await asyncio.wait_for(self._backend.release_claim(claim), FAREWELL_SECONDS)
        except (BackendUnavailable, TimeoutError) as error:
            log.warning(
                "could not release the claim on the job's key; it runs out with its lease",
                extra={
                    "job_id": envelope.id,
                    "job_type": envelope.type,
                    "lease_seconds": claim.lease_seconds,
                    "error": str(error) or f"no answer within {FAREWELL_SECONDS}s",
                },
            )

    def _is_async(self, handler: Handler) -> bool:
        found = self._async_handlers.get(handler)
        if found is None:
            found = self._async_handlers[handler] = inspect.iscoroutinefunction(handler)
        return found

    async def _attempt(self, handler: Handler, job: Job, timeout_seconds: int) -> _AttemptResult:
        """Run the handler within its timeout, cancelled once the drain time is up. An async handler's
        first step runs here at once: one that finishes without waiting on anything (no I/O) needs no
        task, timer or wait of its own; one that waits goes on in a task, as every handler did before."""
        if self._abandon.is_set():
            return _Abandoned()
        call: asyncio.Task[None]
        if self._is_async(handler):
            coroutine = handler(job)
            assert isinstance(coroutine, Coroutine)
            try:
                waiting_on = coroutine.send(None)
            except StopIteration:
                return _Succeeded()
            except Exception as error:
                return _handler_failure(error, job)
            call = asyncio.create_task(_continue(_Continued(coroutine, waiting_on)))
        else:
            call = asyncio.create_task(asyncio.to_thread(cast(Callable[[Job], None], handler), job))
        await asyncio.wait(
            {call, self._abandoned()}, timeout=timeout_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        if call.done():
            raised = call.exception()
            return _Succeeded() if raised is None else _handler_failure(raised, job)
        call.cancel()
        await asyncio.wait({call}, timeout=CANCEL_GRACE_SECONDS)
        if self._abandon.is_set():
            return _Abandoned()
        return Failure(
            FailureClass.TIMEOUT, f"the attempt ran longer than timeoutSeconds ({timeout_seconds}s)"
        )

    def _abandoned(self) -> asyncio.Future[None]:
        """One future for all attempts, done once the drain time is up (cheaper than a task per attempt)."""
        if self._abandon_future is None:
            self._abandon_future = asyncio.get_running_loop().create_future()
            if self._abandon.is_set():
                self._abandon_future.set_result(None)
        return self._abandon_future

    def _give_up_draining(self) -> None:
        self._abandon.set()
        if self._abandon_future is not None and not self._abandon_future.done():
            self._abandon_future.set_result(None)

    async def _settle(
        self,
        delivery: Delivery,
        envelope: Envelope | None,
        decision: Decision | Release | Defer,
        *,
        job_type: str | None = None,
        failure: Failure | None = None,
        completed_key: CompletedKey | None = None,
        handler_seconds: float | None = None,
    ) -> None:
        """Carry out the decision on the backend, retrying while the queue is unreachable (not past the
        drain time: then the job is left to the backend's recovery); then count and log it."""
        self._free_slot(id(delivery))  # its handler is done (or never runs): the next job may start
        fields: dict[str, Any] = {}
        if envelope is not None:
            fields = {"job_id": envelope.id, "job_type": envelope.type, "attempt": envelope.attempt}
        backoff = ReconnectBackoff(self._sample)
        while True:
            try:
                await self._apply(delivery, envelope, decision, failure, completed_key)
                break
            except BackendUnavailable as error:
                if self._abandon.is_set():
                    log.warning(
                        "queue unreachable; job left for recovery", extra={**fields, "error": str(error)}
                    )
                    return
                delay = backoff.next_delay()
                log.warning(
                    "queue unreachable while settling a job",
                    extra={**fields, "error": str(error), "retry_in_seconds": round(delay, 2)},
                )
                await _sleep_unless(self._abandon, delay)
            except DeliveryLost as error:
                log.warning("job could not be settled", extra={**fields, "error": str(error)})
                return
            except DestinationRefused as error:
                # Nothing was removed: the job is still ours. Give it back, unchanged, to run again later
                # (a dead-letter queue someone broke must not eat jobs, nor make a worker spin on them).
                spec = self._policies.get(envelope.type) if envelope is not None else None
                delay = spec.retry.backoff.max_seconds if spec else GIVE_BACK_SECONDS_WITHOUT_POLICY
                log.error(
                    "the job's destination refused it; job given back for a later try",
                    extra={
                        **fields,
                        "destination": error.destination,
                        "error": str(error),
                        "retry_in_seconds": delay,
                    },
                )
                await self._give_back_later(delivery, delay, fields)
                return
        if isinstance(decision, Release):
            log.info("job given back unfinished", extra=fields)
            return
        if isinstance(decision, Defer):
            log.info(
                "a copy of the job is running on another worker; looking again later",
                extra={**fields, "retry_in_seconds": round(decision.delay_seconds, 3)},
            )
            return
        label = job_type if job_type is not None else (envelope.type if envelope else "")
        self._metrics.count(label, decision.outcome, handler_seconds)
        if failure is not None and failure.failure_class is not None:
            self._metrics.count_failure(label, decision.outcome, failure.failure_class.value)
        done = decision.outcome in (Outcome.SUCCEEDED, Outcome.DUPLICATE)
        level = logging.INFO if done else logging.WARNING
        if log.isEnabledFor(level):  # the record's fields are built only for a line that is written
            details = {**fields, **_outcome_details(decision, failure, handler_seconds)}
            log.log(level, "job done" if done else "job not done", extra=details)

    async def _give_back_later(self, delivery: Delivery, delay: float, fields: dict[str, Any]) -> None:
        """The job as it came, available again after `delay` (or at once, if even that write fails)."""
        try:
            try:
                await self._backend.retry(delivery, delivery.body, delay)
            except DestinationRefused:
                await self._backend.release(delivery)
        except (BackendUnavailable, DeliveryLost, DestinationRefused) as error:
            log.warning(
                "job could not be given back; left for recovery", extra={**fields, "error": str(error)}
            )

    async def _apply(
        self,
        delivery: Delivery,
        envelope: Envelope | None,
        decision: Decision | Release | Defer,
        failure: Failure | None,
        completed_key: CompletedKey | None,
    ) -> None:
        match decision:
            case Release():
                await self._backend.release(delivery)
            case Defer(delay_seconds=delay):
                await self._backend.defer(delivery, delay)
            case Complete():
                await self._backend.complete(delivery, completed_key)
            case RetryLater():
                assert envelope is not None
                retried = with_failure(
                    envelope, self._record(decision.reason, failure, envelope), next_attempt=True
                )
                await self._backend.retry(delivery, encode(retried), decision.delay_seconds)
            case Remove(queue=None):
                await self._backend.move(delivery, None, b"")
            case Remove():
                assert envelope is not None
                removed = with_failure(
                    envelope, self._record(decision.reason, failure, envelope), next_attempt=False
                )
                await self._backend.move(delivery, decision.queue, encode(removed))

    def _record(self, reason: FailureReason, failure: Failure | None, envelope: Envelope) -> FailureRecord:
        return FailureRecord(
            reason=reason.value,
            failure_class=failure.failure_class.value if failure and failure.failure_class else None,
            message=failure.message if failure else "",
            attempt=envelope.attempt,
            at=self._clock(),
            pool=self._pool,
            revision=self._revision,
        )


def _handler_failure(error: BaseException, job: Job) -> _AttemptResult:
    """What a handler's exception means for its job."""
    if isinstance(error, NeedsReview):
        return _ReviewRequested(str(error) or "the handler asked for review")
    if isinstance(error, JobError):
        return Failure(error.failure_class, f"{type(error).__name__}: {error}")
    log.warning(
        "handler raised",
        exc_info=error,
        extra={"job_id": job.id, "job_type": job.type, "attempt": job.attempt},
    )
    return Failure(FailureClass.UNKNOWN, f"{type(error).__name__}: {error}")


def _outcome_details(
    decision: Decision, failure: Failure | None, handler_seconds: float | None
) -> dict[str, Any]:
    """Log fields saying how a delivery ended. A validation message may quote the payload, so the log gets
    only that it was invalid; the dead letter keeps the full message."""
    details: dict[str, Any] = {"outcome": decision.outcome.value}
    if handler_seconds is not None:
        details["duration_seconds"] = round(handler_seconds, 6)
    if isinstance(decision, Remove | RetryLater):
        details["reason"] = decision.reason.value
    if isinstance(decision, RetryLater):
        details["retry_in_seconds"] = round(decision.delay_seconds, 3)
    if isinstance(decision, Remove):
        details["moved_to"] = decision.queue
    if failure is not None:
        details["failure_class"] = failure.failure_class.value if failure.failure_class else None
        details["error"] = (
            "invalid payload" if failure.failure_class == FailureClass.VALIDATION else failure.message
        )
    return details


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake as soon as `event` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
