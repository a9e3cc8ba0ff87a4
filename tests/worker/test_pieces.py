"""The small parts: demo handler, handler registry, JSON logs, RabbitMQ delay queues, the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from workerfleet.cli.main import build_parser
from workerfleet.worker import NeedsReview, PermanentError, TransientError
from workerfleet.worker.demo import DemoBehaviour, behaviour_from_env, make_handler, register
from workerfleet.worker.envelope import Approval, FailureRecord
from workerfleet.worker.handlers import HandlerRegistry, Job
from workerfleet.worker.jsonlog import JsonFormatter
from workerfleet.worker.rabbitmq import quantized_delay_ms
from workerfleet.worker.redis_support import split_host_port
from workerfleet.worker.settings import ConfigurationError

JOB = Job(
    id="j",
    type="demo",
    payload={},
    attempt=1,
    enqueued_at=datetime(2024, 5, 1, tzinfo=UTC),
    last_failure=None,
)


def test_demo_behaviour_comes_from_the_environment() -> None:
    behaviour = behaviour_from_env(
        {
            "WORKERFLEET_DEMO_JOB_TYPES": "a, b",
            "WORKERFLEET_DEMO_DURATION_SECONDS": "0.5",
            "WORKERFLEET_DEMO_FAILURE_RATE": "0.25",
        }
    )
    assert behaviour == DemoBehaviour(job_types=("a", "b"), duration_seconds=0.5, failure_rate=0.25)
    assert behaviour_from_env({}) == DemoBehaviour(
        job_types=("demo",), duration_seconds=0.0, failure_rate=0.0
    )


@pytest.mark.parametrize(
    "bad", [{"WORKERFLEET_DEMO_FAILURE_RATE": "1.5"}, {"WORKERFLEET_DEMO_DURATION_SECONDS": "soon"}]
)
def test_bad_demo_settings_are_refused(bad: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        behaviour_from_env(bad)


@pytest.mark.parametrize(("sample", "fails"), [(0.0, True), (0.29, True), (0.3, False), (0.99, False)])
def test_the_demo_handler_fails_its_share_of_attempts(sample: float, fails: bool) -> None:
    handler = make_handler(DemoBehaviour(("demo",), 0.0, 0.3), sample=lambda: sample)
    if fails:
        with pytest.raises(TransientError):
            asyncio.run(handler(JOB))
    else:
        asyncio.run(handler(JOB))


def test_the_demo_asks_for_review_until_approved_and_fails_broken_jobs_until_replayed() -> None:
    handler = make_handler(DemoBehaviour(("demo",), 0.0, 0.0))
    ambiguous = replace(JOB, payload={"ambiguous": True})
    with pytest.raises(NeedsReview):
        asyncio.run(handler(ambiguous))
    approval = Approval(by="jane", at=datetime(2024, 5, 2, tzinfo=UTC))
    asyncio.run(handler(replace(ambiguous, approval=approval)))
    broken = replace(JOB, payload={"broken": True})
    with pytest.raises(PermanentError):
        asyncio.run(handler(broken))
    failed = FailureRecord(reason="PermanentError", attempt=1, at=datetime(2024, 5, 2, tzinfo=UTC))
    asyncio.run(handler(replace(broken, last_failure=failed)))


def test_the_demo_fails_every_attempt_while_its_switch_file_is_there(tmp_path: Path) -> None:
    switch = tmp_path / "broken"
    behaviour = behaviour_from_env({"WORKERFLEET_DEMO_FAIL_WHILE": str(switch)})
    handler = make_handler(behaviour, sample=lambda: 1.0)
    asyncio.run(handler(JOB))
    switch.touch()
    with pytest.raises(TransientError):
        asyncio.run(handler(JOB))
    switch.unlink()
    asyncio.run(handler(JOB))


def test_the_demo_registers_for_each_named_job_type() -> None:
    registry = HandlerRegistry()
    register(registry, {"WORKERFLEET_DEMO_JOB_TYPES": "x,y"})
    assert sorted(registry.handlers()) == ["x", "y"]


def test_a_job_type_gets_one_handler_only() -> None:
    registry = HandlerRegistry()

    @registry.handler("resize-image")
    async def first(job: Job) -> None:
        return None

    with pytest.raises(ValueError, match="already has a handler"):

        @registry.handler("resize-image")
        async def second(job: Job) -> None:
            return None

    assert registry.handlers() == {"resize-image": first}


def test_json_logs_carry_the_extra_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.worker.jsonlog")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("job not done", extra={"job_id": "j1", "attempt": 2, "outcome": "retried"})
    finally:
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "job not done"
    assert (entry["level"], entry["job_id"], entry["attempt"], entry["outcome"]) == (
        "warning",
        "j1",
        2,
        "retried",
    )
    assert "args" not in entry


def test_json_log_lines_without_extras_and_with_an_exception_are_whole_objects() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.worker.jsonlog.plain")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.info("worker stopped")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("receiving failed", extra={"retry_in_seconds": 0.5})
    finally:
        logger.removeHandler(handler)
    plain, failed = (json.loads(line) for line in stream.getvalue().splitlines())
    assert plain.keys() == {"time", "level", "logger", "message"}
    assert (plain["level"], plain["logger"], plain["message"]) == (
        "info",
        "tests.worker.jsonlog.plain",
        "worker stopped",
    )
    assert datetime.fromisoformat(plain["time"]).utcoffset() == timedelta(0)
    assert failed["retry_in_seconds"] == 0.5
    assert "RuntimeError: boom" in failed["exception"]


@pytest.mark.parametrize(
    ("seconds", "milliseconds"),
    [(0.0001, 1), (0.05, 50), (0.937, 940), (1.0, 1000), (12.345, 13000), (299.0, 300000), (0.1234, 130)],
)
def test_retry_delays_on_rabbitmq_round_up_to_two_significant_digits(
    seconds: float, milliseconds: int
) -> None:
    assert quantized_delay_ms(seconds) == milliseconds


@pytest.mark.parametrize(
    ("address", "parts"),
    [("redis:6379", ("redis", 6379)), ("10.0.0.1:5672", ("10.0.0.1", 5672)), ("[::1]:6379", ("::1", 6379))],
)
def test_addresses_split_into_host_and_port(address: str, parts: tuple[str, int]) -> None:
    assert split_host_port(address) == parts


def test_the_worker_sub_command_takes_handler_modules() -> None:
    args = build_parser().parse_args(["worker", "--handlers", "a.b", "--handlers", "c", "--concurrency", "4"])
    assert (args.handlers, args.concurrency, args.metrics_port) == (["a.b", "c"], 4, None)
