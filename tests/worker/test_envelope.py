from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from workerfleet.worker.envelope import (
    FailureRecord,
    MalformedEnvelope,
    decode,
    encode,
    new_envelope,
    with_failure,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_a_new_envelope_round_trips_in_camel_case() -> None:
    envelope = new_envelope("resize-image", {"width": 64}, now=NOW, job_id="job-1")
    raw = encode(envelope)
    assert json.loads(raw) == {
        "id": "job-1",
        "type": "resize-image",
        "payload": {"width": 64},
        "enqueuedAt": "2024-05-01T12:00:00Z",
        "attempt": 1,
    }
    assert decode(raw) == envelope


def test_ids_are_unique_when_the_producer_has_none() -> None:
    assert new_envelope("t", None, now=NOW).id != new_envelope("t", None, now=NOW).id


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"not json", "(message)"),
        (b'{"type": "t", "payload": 1, "enqueuedAt": "2024-05-01T12:00:00Z"}', "id"),
        (b'{"id": "1", "type": "t", "enqueuedAt": "2024-05-01T12:00:00"}', "enqueuedAt"),
        (b'{"id": "1", "type": "t", "enqueuedAt": "2024-05-01T12:00:00Z", "attempt": 0}', "attempt"),
        (b'{"id": "1", "type": "t", "enqueuedAt": "2024-05-01T12:00:00Z", "atempt": 2}', "atempt"),
        (b"", "(message)"),
    ],
)
def test_malformed_messages_say_what_is_wrong(raw: bytes, complaint: str) -> None:
    with pytest.raises(MalformedEnvelope, match=r"not a job envelope") as raised:
        decode(raw)
    assert complaint in str(raised.value)


def test_malformed_message_errors_do_not_echo_the_content() -> None:
    with pytest.raises(MalformedEnvelope) as raised:
        decode(b'{"id": "1", "type": "t", "enqueuedAt": "2024-05-01T12:00:00Z", "attempt": "s3cr3t"}')
    assert "s3cr3t" not in str(raised.value)


def test_with_failure_numbers_the_next_attempt_only_for_retries() -> None:
    envelope = new_envelope("t", {}, now=NOW)
    failure = FailureRecord(
        reason="AttemptFailed", failure_class="transient", message="x" * 5000, attempt=1, at=NOW
    )
    retried = with_failure(envelope, failure, next_attempt=True)
    dead = with_failure(envelope, failure, next_attempt=False)
    assert (retried.attempt, dead.attempt) == (2, 1)
    assert retried.enqueued_at == envelope.enqueued_at
    assert retried.last_failure is not None
    assert len(retried.last_failure.message) == 2000
    assert decode(encode(retried)) == retried
