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
      },
      "approval": {                      # absent unless a person approved the job in review
        "by": "jane@example.com", "note": "looks right", "at": "..."
      }
    }

A retry re-enqueues the envelope with `attempt` + 1 and `lastFailure` set; a dead letter or review item
is the envelope with `lastFailure` saying why it ended there. Unknown fields are refused, so a typo in
a producer shows up as a dead letter instead of silently losing data.

A message that is not an envelope at all is dead-lettered as an envelope wrapping it (`quarantine`):
its `id`, `type` and `enqueuedAt` where the message has usable ones (else a fresh id, type
`(malformed)` and the time it was found), and as payload the original message, `{"original": text}`, or
`{"originalBase64": ...}` when it is not UTF-8; a message over the size bound keeps its first
`max_bytes` only, and says how big it was (`"truncatedFromBytes": n`).

Bounds (`MessageLimits`, set per worker): a message longer than `max_bytes`, or nesting arrays and
objects deeper than `max_depth`, is refused before any parser sees it (MessageTooLarge, NestingTooDeep).
Nothing here raises anything but MalformedEnvelope, whatever the bytes: a parser's own limits
(recursion, integer size) and Python's never reach the caller.
"""

from __future__ import annotations

import base64
import re
import uuid
from array import array
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate
from typing import Annotated, Any

import pydantic_core
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

MESSAGE_MAX_LENGTH = 2_000
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
DEFAULT_MAX_NESTING_DEPTH = 64
ENVELOPE_DEPTH = 2
"""How deep an envelope nests by itself (the envelope, its lastFailure): the least max_depth can be."""


class MalformedEnvelope(ValueError):  # noqa: N818  (names what the message is)
    """A message on the queue is not a job envelope."""


class MessageTooLarge(MalformedEnvelope):
    """A message longer than the worker's size bound: never parsed."""


class NestingTooDeep(MalformedEnvelope):
    """A message nesting arrays or objects deeper than the worker's bound: never parsed."""


@dataclass(frozen=True)
class MessageLimits:
    """What a worker will parse. `names` say where each bound is set, for the dead letter's message."""

    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_depth: int = DEFAULT_MAX_NESTING_DEPTH
    bytes_setting: str = "WORKERFLEET_MAX_MESSAGE_BYTES"
    depth_setting: str = "WORKERFLEET_MAX_NESTING_DEPTH"


DEFAULT_LIMITS = MessageLimits()

# A JSON string, also an unterminated one (it then runs to the end): never fails to match, so scanning
# is linear whatever the bytes.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in _BRACKETS)
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1, +1, -1, -1 as signed bytes


def nesting_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in `raw` (brackets inside strings do not count); linear time and
    no recursion, so it is safe on any bytes. Unbalanced input counts its open brackets; after a stray
    closing bracket a parser stops, so what follows it may count for less than it would."""
    steps = _JSON_STRING.sub(b"", raw).translate(_DEPTH_STEPS, _NOT_BRACKETS)
    return max(0, *accumulate(array("b", steps))) if steps else 0


def check_bounds(raw: bytes, limits: MessageLimits) -> None:
    """MessageTooLarge or NestingTooDeep when `raw` breaks a bound, naming it and where it is set."""
    if len(raw) > limits.max_bytes:
        raise MessageTooLarge(
            f"the message has {len(raw)} bytes, more than the bound of {limits.max_bytes} "
            f"({limits.bytes_setting})"
        )
    # Fewer opening brackets than the bound (strings' included) cannot nest past it: no scan needed.
    if raw.count(b"[") + raw.count(b"{") <= limits.max_depth:
        return
    depth = nesting_depth(raw)
    if depth > limits.max_depth:
        raise NestingTooDeep(
            f"the message nests {depth} levels deep, more than the bound of {limits.max_depth} "
            f"({limits.depth_setting})"
        )


ID_MAX_LENGTH = 256
TYPE_MAX_LENGTH = 253


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


class Approval(_Model):
    """A person approved a job the handler sent to review (`kubectl workerfleet review approve`): the
    handler sees it as `job.approval` and can act on the decision instead of asking again."""

    by: str
    note: Annotated[str, Field(max_length=MESSAGE_MAX_LENGTH)] = ""
    at: AwareDatetime


class Envelope(_Model):
    """One job as it travels through the queues."""

    id: Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH)]
    type: Annotated[str, Field(min_length=1, max_length=TYPE_MAX_LENGTH)]
    payload: Any = None
    enqueued_at: AwareDatetime
    attempt: Annotated[int, Field(ge=1)] = 1
    deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    last_failure: FailureRecord | None = None
    approval: Approval | None = None


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


def decode(raw: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> Envelope:
    """Parse a message within `limits`; MalformedEnvelope (or its kinds for a broken bound) names what is
    wrong without echoing the payload, and is all this ever raises."""
    check_bounds(raw, limits)
    try:
        return Envelope.model_validate_json(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or '(message)'}: {problem['msg']}"
            for problem in error.errors(include_input=False)
        )
        raise MalformedEnvelope(f"not a job envelope: {problems}") from None
    except (ValueError, RecursionError, MemoryError) as error:
        raise MalformedEnvelope(f"not a job envelope: {type(error).__name__}") from None


def peek_fields(raw: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The top-level fields of a message that is a JSON object within `limits`, else {}; never raises.
    For what must look into a message that may not be an envelope (quarantine, a stream's reclaim)."""
    try:
        check_bounds(raw, limits)
        found = pydantic_core.from_json(raw)
    except (ValueError, RecursionError, MemoryError):
        return {}
    return found if isinstance(found, dict) else {}


def peek_job_type(raw: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> str | None:
    """The message's `type` when it has a usable one; never raises."""
    return _usable(peek_fields(raw, limits).get("type"), TYPE_MAX_LENGTH)


def _usable(value: object, max_length: int) -> str | None:
    """`value` when it could be an envelope's id or type (a string, not empty, not too long)."""
    return value if isinstance(value, str) and 0 < len(value) <= max_length else None


def with_failure(envelope: Envelope, failure: FailureRecord, *, next_attempt: bool) -> Envelope:
    """The envelope carrying `failure`; for a retry, also numbered as the next attempt."""
    record = failure.model_copy(update={"message": failure.message[:MESSAGE_MAX_LENGTH]})
    attempt = envelope.attempt + 1 if next_attempt else envelope.attempt
    return envelope.model_copy(update={"last_failure": record, "attempt": attempt})


MALFORMED_TYPE = "(malformed)"


def quarantine(raw: bytes, *, now: datetime, limits: MessageLimits = DEFAULT_LIMITS) -> Envelope:
    """An envelope carrying a message that is not one, so it can be dead-lettered instead of lost; never
    raises, whatever the bytes. Keeps the first `limits.max_bytes` of the message, and says so."""
    kept = raw[: limits.max_bytes]
    try:
        payload: dict[str, Any] = {"original": kept.decode()}
    except UnicodeDecodeError:
        payload = {"originalBase64": base64.b64encode(kept).decode()}
    if len(kept) < len(raw):
        payload["truncatedFromBytes"] = len(raw)
    fields = peek_fields(raw, limits)
    job_id, job_type, enqueued = fields.get("id"), fields.get("type"), fields.get("enqueuedAt")
    enqueued_at = now
    if isinstance(enqueued, str):
        try:
            found = datetime.fromisoformat(enqueued)
        except ValueError:
            found = now
        enqueued_at = found if found.tzinfo is not None else now
    return Envelope(
        id=_usable(job_id, ID_MAX_LENGTH) or f"malformed-{uuid.uuid4()}",
        type=_usable(job_type, TYPE_MAX_LENGTH) or MALFORMED_TYPE,
        payload=payload,
        enqueued_at=enqueued_at,
    )
