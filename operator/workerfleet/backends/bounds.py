"""How much of an answer from outside the operator reads, and how long it waits for it.

A pool's settings point the shared operator at Prometheus servers and queue servers it does not
control; each of their answers is read up to these bounds, so one pool's endpoint costs the operator
no more than that, and an answer past a bound fails that pool's read alone, with the bound as reason.
"""

from __future__ import annotations

import json
import re

MAX_ANSWER_BYTES = 1024 * 1024
"""An instant query's answer of one sample is a few hundred bytes; a Redis reply the depth sources
read is a count or one job's envelope."""
MAX_ANSWER_NESTING = 32
"""A Prometheus answer nests five levels deep (answer, data, result, sample, value)."""
ANSWER_TIMEOUT_SECONDS = 5.0
"""From the request to the last byte of the answer."""


class BoundReason:
    """Condition reasons of a read stopped at a bound."""

    TOO_LARGE = "AnswerTooLarge"
    TOO_DEEP = "AnswerTooDeep"
    TIMED_OUT = "AnswerTimedOut"


class AnswerOutOfBoundsError(RuntimeError):
    """The answer passed one of the operator's bounds; `reason` is its BoundReason."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def too_large(hint: str = "") -> AnswerOutOfBoundsError:
    """`hint`: what the pool's author can do about it, after a colon."""
    return AnswerOutOfBoundsError(
        f"answer larger than {MAX_ANSWER_BYTES // 1024} KiB, the operator's bound{hint}",
        BoundReason.TOO_LARGE,
    )


def timed_out(seconds: float = ANSWER_TIMEOUT_SECONDS) -> AnswerOutOfBoundsError:
    return AnswerOutOfBoundsError(
        f"no complete answer within {seconds:.0f}s, the operator's bound", BoundReason.TIMED_OUT
    )


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_A_BRACKET = bytes(byte for byte in range(256) if byte not in b"[]{}")


def nesting_depth(raw: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets within strings do not count)."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_A_BRACKET)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def decode_json(raw: bytes) -> object:
    """A JSON answer already read within MAX_ANSWER_BYTES, decoded unless it nests too deep.

    Raises AnswerOutOfBoundsError past a bound, ValueError when it is not JSON."""
    if len(raw) > MAX_ANSWER_BYTES:
        raise too_large()
    if nesting_depth(raw) > MAX_ANSWER_NESTING:
        raise AnswerOutOfBoundsError(
            f"answer nested deeper than {MAX_ANSWER_NESTING} levels, the operator's bound",
            BoundReason.TOO_DEEP,
        )
    return json.loads(raw)
