"""Hostile messages: bytes a buggy or malicious producer may put on a queue, each kind with the reason a
worker dead-letters it under (its `lastFailure.reason`), and how to tell its dead letter among others.

The kinds are those of issue 22: deep nesting, a huge body, invalid UTF-8, an over-long type, JSON
that is no object, an empty body. Every body is distinct (it carries `tag`), so a dead letter is
matched to the message it keeps (`matches`), also when the worker had to give it an id of its own.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from enum import StrEnum

from workerfleet.worker.envelope import Envelope

DEEP_ARRAY_LEVELS = 100_000
DEEP_PAYLOAD_LEVELS = 50_000
HUGE_BYTES = 64 * 1024 * 1024
LONG_TYPE_LENGTH = 250
ENQUEUED_AT = "2024-05-01T12:00:00Z"


class HostileKind(StrEnum):
    DEEP_ARRAY = "deep-array"
    """`[` nested 100,000 deep, then the tag (no envelope at all)."""
    DEEP_PAYLOAD = "deep-payload"
    """An envelope whose payload nests 50,000 objects deep."""
    HUGE = "huge"
    """An envelope of 64 MiB."""
    INVALID_UTF8 = "invalid-utf8"
    """An envelope with bytes that are not UTF-8 inside a string."""
    LONG_TYPE = "long-type"
    """A well-formed envelope whose type has 250 characters (a type no pool serves)."""
    JSON_ARRAY = "json-array"
    """JSON, but an array, not an object."""
    EMPTY = "empty"
    """No bytes at all."""


EXPECTED_REASON: dict[HostileKind, str] = {
    HostileKind.DEEP_ARRAY: "NestingTooDeep",
    HostileKind.DEEP_PAYLOAD: "NestingTooDeep",
    HostileKind.HUGE: "MessageTooLarge",
    HostileKind.INVALID_UTF8: "MalformedEnvelope",
    HostileKind.LONG_TYPE: "UnknownJobType",
    HostileKind.JSON_ARRAY: "MalformedEnvelope",
    HostileKind.EMPTY: "MalformedEnvelope",
}


def _envelope_text(tag: str, job_type: str, payload: str) -> bytes:
    head = f'{{"id": {json.dumps(tag)}, "type": {json.dumps(job_type)}, "enqueuedAt": "{ENQUEUED_AT}", '
    return head.encode() + b'"payload": ' + payload.encode() + b"}"


def body(kind: HostileKind, tag: str, job_type: str = "probe") -> bytes:  # noqa: PLR0911  (one per kind)
    """The message of `kind`; `tag` makes it distinct (the empty body is the one that cannot be)."""
    match kind:
        case HostileKind.DEEP_ARRAY:
            return b"[" * DEEP_ARRAY_LEVELS + json.dumps(tag).encode()
        case HostileKind.DEEP_PAYLOAD:
            nested = '{"a": ' * DEEP_PAYLOAD_LEVELS + "1" + "}" * DEEP_PAYLOAD_LEVELS
            return _envelope_text(tag, job_type, nested)
        case HostileKind.HUGE:
            head = _envelope_text(tag, job_type, '{"blob": "')[:-1]  # without the closing brace
            tail = b'"}}'
            return head + b"x" * (HUGE_BYTES - len(head) - len(tail)) + tail
        case HostileKind.INVALID_UTF8:
            return _envelope_text(tag, job_type, '{"text": "@@"}').replace(b"@@", b"\xff\xfe")
        case HostileKind.LONG_TYPE:
            return _envelope_text(tag, "t" * LONG_TYPE_LENGTH, "{}")
        case HostileKind.JSON_ARRAY:
            return json.dumps([tag, 1, 2, 3]).encode()
        case HostileKind.EMPTY:
            return b""


@dataclass(frozen=True)
class HostileMessage:
    kind: HostileKind
    tag: str
    job_type: str = "probe"

    @property
    def body(self) -> bytes:
        return body(self.kind, self.tag, self.job_type)

    @property
    def size(self) -> int:
        """The body's length, without building a huge one."""
        return HUGE_BYTES if self.kind is HostileKind.HUGE else len(self.body)

    @property
    def expected_reason(self) -> str:
        return EXPECTED_REASON[self.kind]

    def matches(self, dead_letter: Envelope) -> bool:
        """Whether `dead_letter` is this message: the same id (a usable envelope keeps its own), or the
        original bytes it keeps are this message's (a prefix of them, when it says it was truncated)."""
        if self.kind is HostileKind.LONG_TYPE:
            return dead_letter.id == self.tag
        kept = kept_original(dead_letter)
        if kept is None:
            return False
        original, size = kept
        return size == self.size and self.body.startswith(original)


def kept_original(dead_letter: Envelope) -> tuple[bytes, int] | None:
    """The original bytes a quarantined message's dead letter keeps, and the original's full size."""
    payload = dead_letter.payload
    if not isinstance(payload, dict):
        return None
    if isinstance(payload.get("original"), str):
        kept = payload["original"].encode()
    elif isinstance(payload.get("originalBase64"), str):
        kept = base64.b64decode(payload["originalBase64"])
    else:
        return None
    size = payload.get("truncatedFromBytes", len(kept))
    return kept, size if isinstance(size, int) else len(kept)


def every_kind(prefix: str, job_type: str = "probe") -> list[HostileMessage]:
    """One message of each kind, tagged `<prefix>-<kind>`."""
    return [HostileMessage(kind, f"{prefix}-{kind.value}", job_type) for kind in HostileKind]
