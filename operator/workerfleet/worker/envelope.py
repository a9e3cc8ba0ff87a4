"""The job envelope: what producers put on the queue and what the worker runtime reads back.

One job is one JSON object (UTF-8), the same on every backend (a Redis list element, the `job` field of
a Redis stream entry, a RabbitMQ message body):

    {
      "id": "8f14e45f-...",              # unique per job; also what logs and dead letters name
      "type": "resize-image",            # the JobType that defines its schema and policies
      "payload": {...},                  # any JSON value; checked against the JobType's input schema
      "enqueuedAt": "2024-05-01T12:00:00.123Z",   # when the job was first enqueued (deadlines count
                                                  # from here, across retries)
      "attempt": 1,                      # the attempt this delivery is, counting from 1
      "deadlineSeconds": 600,            # optional: this job's own deadline, counted from enqueuedAt;
                                         # it can only shorten the JobType's deadlineSeconds
      "lastFailure": {                   # absent until an attempt fails
        "reason": "AttemptsExhausted", "failureClass": "transient", "message": "...",
        "attempt": 3, "at": "...", "pool": "thumbs", "revision": "5d8c7"
      }
    }

A retry re-enqueues the envelope with `attempt` + 1 and `lastFailure` set; a dead letter or review item
is the envelope with `lastFailure` saying why it ended there. Unknown fields are refused, so a typo in
a producer shows up as a dead letter instead of silently losing data.

A message that is not an envelope at all is dead-lettered as an envelope wrapping it (`quarantine`):
its `id`, `type` and `enqueuedAt` where the message has usable ones (else a fresh id, type
`(malformed)` and the time it was found), and as payload the original message, `{"original": text}`, or
`{"originalBase64": ...}` when it is not UTF-8.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

MESSAGE_MAX_LENGTH = 2_000


class MalformedEnvelope(ValueError):  # noqa: N818  (names what the message is)
    """A message on the queue is not a job envelope."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class FailureRecord(_Model):
    """Why the last attempt failed, or why the job left the queue for a dead-letter or review queue."""

    reason: str
    failure_class: str | None = None
    message: str = ""
    attempt: int
    at: AwareDatetime
    pool: str = ""
    revision: str = ""


class Envelope(_Model):
    """One job as it travels through the queues."""

    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Annotated[str, Field(min_length=1, max_length=253)]
    payload: Any = None
    enqueued_at: AwareDatetime
    attempt: Annotated[int, Field(ge=1)] = 1
    deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    last_failure: FailureRecord | None = None


def new_envelope(
    job_type: str,
    payload: Any,
    *,
    now: datetime,
    job_id: str | None = None,
    deadline_seconds: int | None = None,
) -> Envelope:
    """A fresh job, first attempt; a random id unless the producer has its own."""
    return Envelope(
        id=job_id or str(uuid.uuid4()),
        type=job_type,
        payload=payload,
        enqueued_at=now,
        deadline_seconds=deadline_seconds,
    )


def encode(envelope: Envelope) -> bytes:
    return envelope.model_dump_json(by_alias=True, exclude_none=True).encode()


def decode(raw: bytes) -> Envelope:
    """Parse a message; MalformedEnvelope names what is wrong without echoing the payload."""
    try:
        return Envelope.model_validate_json(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or '(message)'}: {problem['msg']}"
            for problem in error.errors(include_input=False)
        )
        raise MalformedEnvelope(f"not a job envelope: {problems}") from None


def with_failure(envelope: Envelope, failure: FailureRecord, *, next_attempt: bool) -> Envelope:
    """The envelope carrying `failure`; for a retry, also numbered as the next attempt."""
    record = failure.model_copy(update={"message": failure.message[:MESSAGE_MAX_LENGTH]})
    attempt = envelope.attempt + 1 if next_attempt else envelope.attempt
    return envelope.model_copy(update={"last_failure": record, "attempt": attempt})


MALFORMED_TYPE = "(malformed)"


def quarantine(raw: bytes, *, now: datetime) -> Envelope:
    """An envelope carrying a message that is not one, so it can be dead-lettered instead of lost."""
    try:
        payload: Any = {"original": raw.decode()}
    except UnicodeDecodeError:
        payload = {"originalBase64": base64.b64encode(raw).decode()}
    try:
        found = json.loads(raw)
    except ValueError:
        found = None
    fields = found if isinstance(found, dict) else {}
    job_id, job_type = fields.get("id"), fields.get("type")
    try:
        enqueued_at = datetime.fromisoformat(str(fields.get("enqueuedAt")))
    except ValueError:
        enqueued_at = now
    return Envelope(
        id=job_id if isinstance(job_id, str) and 0 < len(job_id) <= 256 else f"malformed-{uuid.uuid4()}",
        type=job_type if isinstance(job_type, str) and 0 < len(job_type) <= 253 else MALFORMED_TYPE,
        payload=payload,
        enqueued_at=enqueued_at if enqueued_at.tzinfo is not None else now,
    )
