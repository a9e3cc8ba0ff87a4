"""The envelope decoder against hostile bytes (issue 22): each kind alone, the bounds, and a fuzz test that
it never raises anything but its own error, within a bounded time per message."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devenv.hostile import HostileKind, HostileMessage, every_kind
from workerfleet.worker.envelope import (
    DEFAULT_LIMITS,
    MALFORMED_TYPE,
    MalformedEnvelope,
    MessageLimits,
    MessageTooLarge,
    NestingTooDeep,
    decode,
    encode,
    nesting_depth,
    new_envelope,
    peek_job_type,
    quarantine,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
READ_BACK = MessageLimits(max_bytes=64 * DEFAULT_LIMITS.max_bytes)
"""Dead letters keep up to max_bytes of the original, encoded: reading them back needs more room."""
RAISED_FOR: dict[str, type[MalformedEnvelope] | None] = {
    "NestingTooDeep": NestingTooDeep,
    "MessageTooLarge": MessageTooLarge,
    "MalformedEnvelope": MalformedEnvelope,
    "UnknownJobType": None,  # a well-formed envelope: the runtime finds no such type
}
PER_MESSAGE = timedelta(seconds=1)
"""Hypothesis' deadline for one example: far above what a 1 MiB message takes (tens of ms)."""


@pytest.mark.parametrize("message", every_kind("alone"), ids=lambda message: message.kind.value)
def test_each_hostile_kind_alone_raises_only_the_decoders_error_naming_the_bound(
    message: HostileMessage,
) -> None:
    expected = RAISED_FOR[message.expected_reason]
    if expected is None:
        assert len(decode(message.body).type) == 250
        return
    with pytest.raises(MalformedEnvelope) as raised:
        decode(message.body)
    assert type(raised.value) is expected
    if expected is NestingTooDeep:
        assert "more than the bound of 64 (WORKERFLEET_MAX_NESTING_DEPTH)" in str(raised.value)
    if expected is MessageTooLarge:
        assert "more than the bound of 1048576 (WORKERFLEET_MAX_MESSAGE_BYTES)" in str(raised.value)


@pytest.mark.parametrize("message", every_kind("kept"), ids=lambda message: message.kind.value)
def test_quarantine_keeps_the_original_bytes_and_truncates_only_above_the_size_bound(
    message: HostileMessage,
) -> None:
    wrapped = quarantine(message.body, now=NOW)
    assert message.matches(wrapped)
    truncated = "truncatedFromBytes" in wrapped.payload
    assert truncated == (message.kind is HostileKind.HUGE)
    if truncated:
        assert wrapped.payload["truncatedFromBytes"] == len(message.body)
    # The dead letter is an envelope the worker writes and anyone can read back
    assert decode(encode(wrapped), READ_BACK) == wrapped
    assert len(encode(wrapped)) < 2 * DEFAULT_LIMITS.max_bytes


def test_quarantine_keeps_an_id_and_type_only_from_a_message_within_the_bounds() -> None:
    shallow = b'{"id": "job-7", "type": "resize", "enqueuedAt": "2024-05-01T12:00:00Z", "extra": 1}'
    wrapped = quarantine(shallow, now=NOW)
    assert (wrapped.id, wrapped.type, wrapped.enqueued_at.year) == ("job-7", "resize", 2024)
    deep = shallow[:-1] + b', "payload": ' + b"[" * 65 + b"]" * 65 + b"}"
    wrapped = quarantine(deep, now=NOW)
    assert (wrapped.id.startswith("malformed-"), wrapped.type, wrapped.enqueued_at) == (
        True,
        MALFORMED_TYPE,
        NOW,
    )


def test_the_bounds_are_settings_and_a_message_at_the_bound_is_parsed() -> None:
    envelope = new_envelope("t", {"a": [[["deep"]]]}, now=NOW, job_id="j")
    raw = encode(envelope)
    assert nesting_depth(raw) == 5
    assert decode(raw, MessageLimits(max_bytes=len(raw), max_depth=5)) == envelope
    with pytest.raises(NestingTooDeep, match=r"nests 5 levels deep, more than the bound of 4"):
        decode(raw, MessageLimits(max_depth=4))
    with pytest.raises(
        MessageTooLarge, match=rf"has {len(raw)} bytes, more than the bound of {len(raw) - 1}"
    ):
        decode(raw, MessageLimits(max_bytes=len(raw) - 1))


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"", 0),
        (b'"[[[["', 0),  # brackets inside a string do not count
        (b'["a\\"[[", {"b": [1]}]', 3),  # nor after an escaped quote
        (b'"unterminated [[[', 0),
        (b"[[[", 3),  # unbalanced: its open brackets count
        (b"]]]", 0),
        (b'{"a": {"b": {}}, "c": []}', 3),
    ],
)
def test_nesting_depth_counts_brackets_outside_strings(raw: bytes, depth: int) -> None:
    assert nesting_depth(raw) == depth


def test_peek_job_type_never_raises_and_reads_a_type_only_within_the_bounds() -> None:
    for message in every_kind("peek"):
        found = peek_job_type(message.body)
        expected = {HostileKind.LONG_TYPE: "t" * 250, HostileKind.INVALID_UTF8: None}.get(message.kind)
        assert found == expected, message.kind
    assert peek_job_type(b'{"type": "resize"}') == "resize"


def _assert_only_its_own_error(raw: bytes) -> None:
    with contextlib.suppress(MalformedEnvelope):
        decode(raw)
    wrapped = quarantine(raw, now=NOW)
    assert decode(encode(wrapped), READ_BACK) == wrapped
    peek_job_type(raw)


@settings(deadline=PER_MESSAGE, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes_raise_nothing_but_the_decoders_error(raw: bytes) -> None:
    _assert_only_its_own_error(raw)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=40,
)


@settings(deadline=PER_MESSAGE, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.text(max_size=300) | JSON_VALUES,
            "type": st.text(max_size=300) | JSON_VALUES,
            "payload": JSON_VALUES,
            "enqueuedAt": st.datetimes().map(datetime.isoformat) | st.text() | JSON_VALUES,
            "attempt": st.integers() | JSON_VALUES,
            "deadlineSeconds": st.integers() | JSON_VALUES,
            "lastFailure": JSON_VALUES,
        },
    ),
    st.sampled_from(["", " ", "\xff", "[", "}"]),
)
def test_fuzz_envelope_like_json_raises_nothing_but_the_decoders_error(
    fields: dict[str, object], garbage: str
) -> None:
    raw = json.dumps(fields).encode() + garbage.encode("latin-1")
    _assert_only_its_own_error(raw)


@settings(deadline=PER_MESSAGE, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=DEFAULT_LIMITS.max_depth + 1, max_value=300_000),
    st.sampled_from([b"[", b'{"a": ', b'{"id": "x", "payload": [']),
    st.booleans(),
)
def test_fuzz_nesting_past_the_bounds_is_refused_before_any_parser(
    levels: int, opener: bytes, closed: bool
) -> None:
    closer = b"]" if opener.endswith(b"[") else b"}"
    raw = opener * levels + (b"1" + closer * levels if closed else b"")
    # The size is checked first: it needs no scan
    with pytest.raises(MessageTooLarge if len(raw) > DEFAULT_LIMITS.max_bytes else NestingTooDeep):
        decode(raw)
    _assert_only_its_own_error(raw)


@settings(deadline=PER_MESSAGE, max_examples=10, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=1, max_value=64 * 1024 * 1024), st.sampled_from([b"x", b"\xff", b"["]))
def test_fuzz_messages_over_the_size_bound_are_refused_unread(extra: int, filler: bytes) -> None:
    raw = filler * (DEFAULT_LIMITS.max_bytes + extra)
    with pytest.raises(MessageTooLarge):
        decode(raw)
    wrapped = quarantine(raw, now=NOW)
    assert wrapped.payload["truncatedFromBytes"] == len(raw)
