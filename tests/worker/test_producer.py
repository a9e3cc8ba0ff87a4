"""The producer builds the envelope the runtime reads, and refuses what the workers would dead-letter."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from workerfleet import producer
from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.workerpool import Queue
from workerfleet.worker.envelope import decode, encode

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RESIZE: dict[str, Any] = {
    "lane": "fast",
    "timeoutSeconds": 30,
    "deadlineSeconds": 3600,
    "input": {
        "schema": {
            "type": "object",
            "required": ["url", "width"],
            "properties": {"url": {"type": "string"}, "width": {"type": "integer", "minimum": 1}},
        }
    },
    "idempotency": {"keyField": "request.id"},
}


def target(spec: dict[str, Any] = RESIZE, served: tuple[str, ...] = ("resize",)) -> producer.Target:
    return producer.Target(
        pool="thumbs",
        queue=Queue.model_validate({"redis": {"address": "127.0.0.1:6379", "list": "jobs"}}),
        served=served,
        job_type="resize",
        spec=JobTypeSpec.model_validate(spec),
        credentials=Credentials(),
    )


GOOD = {"url": "s3://a", "width": 64, "request": {"id": "r-1"}}


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        (
            {"url": "s3://a", "width": "64", "request": {"id": "r"}},
            {},
            "at $.width: '64' is not of type 'integer'",
        ),
        (
            {"url": "s3://a", "width": 0, "request": {"id": "r"}},
            {},
            "at $.width: 0 is less than the minimum of 1",
        ),
        ({"width": 3, "request": {"id": "r"}}, {}, "at $: 'url' is a required property"),
        ({"url": "s3://a", "width": 3}, {}, "no idempotency key at request.id"),
        (GOOD, {"key": "other"}, "data field request.id is 'r-1' but --key says 'other'"),
        (["not", "an", "object"], {"key": "k"}, "--key needs the data to be a JSON object"),
        (GOOD, {"deadline": "2h"}, "deadline 7200s is past job type resize's deadlineSeconds (3600s)"),
        (GOOD, {"deadline": "soon"}, "deadline 'soon' is not a duration"),
        (GOOD, {"deadline": "0s"}, "deadline must be at least 1s"),
    ],
)
def test_what_the_worker_would_refuse_is_refused_naming_the_field(
    data: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(producer.InvalidJob) as refused:
        producer.build(target(), data, now=NOW, **options)
    assert message in str(refused.value)


def test_a_type_the_pool_does_not_serve_is_refused() -> None:
    with pytest.raises(
        producer.InvalidJob, match=r"pool thumbs does not serve job type resize \(spec.jobTypes: a, b\)"
    ):
        producer.build(target(served=("a", "b")), GOOD, now=NOW)


def test_a_key_without_idempotency_on_the_job_type_is_refused() -> None:
    spec = {key: value for key, value in RESIZE.items() if key != "idempotency"}
    with pytest.raises(producer.InvalidJob, match=r"has no idempotency\.keyField"):
        producer.build(target(spec), {"url": "s3://a", "width": 1}, key="k", now=NOW)


def test_the_envelope_is_what_the_runtime_reads() -> None:
    envelope = producer.build(
        target(), {"url": "s3://a", "width": 64}, key="r-9", deadline="10m", job_id="job-1", now=NOW
    )
    assert decode(encode(envelope)) == envelope
    assert (envelope.id, envelope.type, envelope.attempt) == ("job-1", "resize", 1)
    assert envelope.payload == {"url": "s3://a", "width": 64, "request": {"id": "r-9"}}
    assert envelope.deadline_seconds == 600
    assert envelope.enqueued_at == NOW


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("45", 45)]
)
def test_durations(text: str, seconds: int) -> None:
    assert producer.parse_duration(text) == seconds


def test_targets_from_files_name_what_is_wrong(tmp_path: Path) -> None:
    pool = {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "thumbs"},
        "spec": {
            "jobTypes": ["resize"],
            "template": {"spec": {"containers": [{"name": "w", "image": "w:1"}]}},
            "queue": {"redisStream": {"address": "redis:6379", "stream": "s", "consumerGroup": "g"}},
        },
    }
    job_type = {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": "resize"},
        "spec": RESIZE,
    }
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
    (tmp_path / "types.yaml").write_text(
        yaml.safe_dump_all([{**job_type, "metadata": {"name": "other"}}, job_type])
    )
    found = producer.from_files(
        str(tmp_path / "pool.yaml"),
        [str(tmp_path / "types.yaml")],
        job_type="resize",
        address="127.0.0.1:7000",
    )
    assert found.queue.redis_stream is not None
    assert found.queue.redis_stream.address == "127.0.0.1:7000"
    assert found.spec.idempotency is not None
    with pytest.raises(producer.InvalidJob, match="job type missing is in none of the files given"):
        producer.from_files(str(tmp_path / "pool.yaml"), [str(tmp_path / "types.yaml")], job_type="missing")
    with pytest.raises(producer.InvalidJob, match="is not a WorkerPool manifest"):
        producer.from_files(str(tmp_path / "types.yaml"), [str(tmp_path / "types.yaml")], job_type="resize")


WHEN = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delay", "at", "due"),
    [
        (None, None, WHEN),
        ("10m", None, WHEN + timedelta(minutes=10)),
        (90, None, WHEN + timedelta(seconds=90)),
        (None, "2026-05-01T13:00:00Z", WHEN + timedelta(hours=1)),
        (None, "2026-05-01T15:00:00+02:00", WHEN + timedelta(hours=1)),
        (None, "2026-05-01T11:00:00Z", WHEN),  # a time past: due at once
    ],
)
def test_a_job_asked_to_wait_is_due_at_its_time(
    delay: str | int | None, at: str | None, due: datetime
) -> None:
    assert producer.due_time(WHEN, delay=delay, at=at) == due


@pytest.mark.parametrize(
    ("delay", "at", "message"),
    [
        ("soon", None, "--delay 'soon' is not a duration such as 90s, 10m, 2h or 1h30m"),
        (None, "tomorrow", "--at 'tomorrow' is not a time such as 2026-05-01T03:00:00Z"),
        (None, "2026-05-01T13:00:00", "--at 2026-05-01T13:00:00 has no time zone: add Z or an offset"),
        ("10m", "2026-05-01T13:00:00Z", "give --delay or --at, not both"),
    ],
)
def test_a_wait_that_cannot_be_read_is_refused_naming_the_flag(
    delay: str | None, at: str | None, message: str
) -> None:
    with pytest.raises(producer.InvalidJob, match=re.escape(message)):
        producer.due_time(WHEN, delay=delay, at=at)
