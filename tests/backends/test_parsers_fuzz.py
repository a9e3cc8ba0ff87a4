"""The parsers of what Prometheus and the queue servers answer, on arbitrary bytes and values: each
raises only its own error (which the depth source turns into a condition), never another exception
that would end a poll, and each stays fast (Hypothesis's deadline) within the operator's bounds."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import exceptions as redis_errors
from redis._parsers import Encoder

from workerfleet.api.base import MAX_COUNT
from workerfleet.backends.analysis import MetricsUnavailableError, value_of
from workerfleet.backends.base import QueueUnreachableError, envelope_age_seconds
from workerfleet.backends.bounds import MAX_ANSWER_NESTING, AnswerOutOfBoundsError, decode_json
from workerfleet.backends.prometheus import depth_from_response
from workerfleet.backends.prometheus_http import PrometheusError, single_sample
from workerfleet.backends.redis_common import MALFORMED_ANSWER
from workerfleet.backends.redis_replies import (
    MAX_REDIS_REPLY_BYTES,
    BoundedRESP3Parser,
    ReplyOutOfBoundsError,
)
from workerfleet.backends.redis_stream import entry_age_seconds

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
DEADLINE = settings(deadline=500, max_examples=300)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["success", "vector", "scalar", "matrix", "NaN", "+Inf", "-Inf", "1e400", "12"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["status", "data", "resultType", "result", "value", "metric", "x"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)
"""Anything JSON can say, leaning towards the words of a Prometheus answer."""

prometheus_like = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["success", "error"]) | json_values,
        "data": st.fixed_dictionaries(
            {"resultType": st.sampled_from(["vector", "scalar"]) | json_values, "result": json_values}
        )
        | json_values,
    }
)
"""Answers shaped like a query result, with anything in their places."""

sample_values = st.sampled_from(["NaN", "+Inf", "-Inf", "1e400", "1e300", "12", "-0"]) | st.floats().map(str)
well_formed = st.builds(
    lambda value, scalar: {
        "status": "success",
        "data": {"resultType": "scalar", "result": [0, value]}
        if scalar
        else {"resultType": "vector", "result": [{"metric": {}, "value": [0, value]}]},
    },
    sample_values | st.text(max_size=10),
    st.booleans(),
)
"""Well-formed answers of one sample, with any value Prometheus could send (and some it would not)."""


@DEADLINE
@given(st.binary(max_size=4096) | st.text(max_size=4096).map(str.encode))
def test_decoding_an_answer_raises_only_its_bounds_or_not_json(raw: bytes) -> None:
    with contextlib.suppress(AnswerOutOfBoundsError, ValueError):
        decode_json(raw)


@DEADLINE
@given(st.integers(min_value=MAX_ANSWER_NESTING + 1, max_value=100_000), st.sampled_from([b"[]", b"{}"]))
def test_any_nesting_past_the_bound_is_refused_before_decoding(depth: int, pair: bytes) -> None:
    opener, closer = pair[:1], pair[1:]
    with pytest.raises(AnswerOutOfBoundsError, match="nested deeper"):
        decode_json(opener * depth + closer * depth)


@DEADLINE
@given(json_values | prometheus_like | well_formed)
def test_the_sample_of_any_answer_is_a_number_none_or_a_prometheus_error(body: object) -> None:
    try:
        number = single_sample(body)
    except PrometheusError:
        return
    assert number is None or isinstance(number, float)


@DEADLINE
@given(json_values | prometheus_like | well_formed)
def test_the_depth_of_any_answer_is_a_count_or_a_queue_error(body: object) -> None:
    try:
        depth = depth_from_response(body)
    except QueueUnreachableError:
        return
    assert isinstance(depth, int)
    assert depth >= 0


@DEADLINE
@given(json_values | prometheus_like | well_formed)
def test_the_analysis_value_of_any_answer_is_a_number_none_or_unavailable(body: object) -> None:
    try:
        value = value_of(body)
    except MetricsUnavailableError:
        return
    assert value is None or (0 <= value <= MAX_COUNT)  # a count of jobs, as status records it


@DEADLINE
@given(
    st.none()
    | st.binary(max_size=2048)
    | st.text(max_size=2048)
    | json_values.map(json.dumps)
    | st.integers(min_value=1, max_value=100_000).map(lambda depth: "[" * depth + "]" * depth)
    | st.builds(lambda stamp: json.dumps({"enqueuedAt": stamp}), st.text(max_size=40))
    | st.builds(
        lambda moment: json.dumps({"enqueuedAt": moment.isoformat()}),
        st.datetimes(timezones=st.timezones()),
    )
)
def test_the_age_of_any_job_at_the_head_of_a_list_is_an_age_or_unknown(raw: bytes | str | None) -> None:
    age = envelope_age_seconds(raw, NOW)
    assert age is None or age >= 0


@DEADLINE
@given(st.none() | st.binary(max_size=64) | st.text(max_size=64) | st.from_regex(r"\A[0-9]{1,400}-[0-9]+\Z"))
def test_the_age_of_any_stream_entry_id_is_an_age_or_unknown(entry_id: bytes | str | None) -> None:
    age = entry_age_seconds(entry_id, int(NOW.timestamp() * 1000))
    assert age is None or age >= 0


class _Wire:
    """What a redis-py parser reads from: a stream holding `data`, then the end."""

    def __init__(self, data: bytes) -> None:
        self._reader = asyncio.StreamReader()
        self._reader.feed_data(data)
        self._reader.feed_eof()
        # redis-py's parser classes are untyped
        self.encoder = Encoder(encoding="utf-8", encoding_errors="strict", decode_responses=False)  # type: ignore[no-untyped-call]


def _parse_reply(data: bytes) -> object:
    async def parse() -> object:
        parser = BoundedRESP3Parser(socket_read_size=65536)  # type: ignore[no-untyped-call]
        parser.on_connect(_Wire(data))  # type: ignore[no-untyped-call]
        return await parser.read_response()

    return asyncio.run(parse())


resp_replies = st.recursive(
    st.sampled_from([b"+OK\r\n", b":12\r\n", b"$-1\r\n", b"_\r\n", b",1.5\r\n", b"#t\r\n", b"-ERR no\r\n"])
    | st.builds(lambda text: b"$%d\r\n%s\r\n" % (len(text), text), st.binary(max_size=20)),
    lambda children: st.builds(
        lambda kind, items: kind + b"%d\r\n" % len(items) + b"".join(items),
        st.sampled_from([b"*", b"~", b">"]),
        st.lists(children, max_size=4),
    ),
    max_leaves=20,
)
"""RESP2 and RESP3 replies, well-formed or cut short by the fuzzing around them."""


@DEADLINE
@given(
    st.binary(max_size=4096) | resp_replies | st.builds(bytes.__add__, resp_replies, st.binary(max_size=16))
)
def test_a_redis_reply_of_any_bytes_parses_or_fails_as_the_depth_sources_handle(data: bytes) -> None:
    with contextlib.suppress(redis_errors.RedisError, *MALFORMED_ANSWER):
        _parse_reply(data)


@DEADLINE
@given(st.integers(min_value=MAX_REDIS_REPLY_BYTES, max_value=2**62), st.sampled_from([b"$", b"=", b"!"]))
def test_a_redis_reply_announcing_more_than_the_bound_is_refused_before_it_is_read(
    length: int, kind: bytes
) -> None:
    with pytest.raises(ReplyOutOfBoundsError, match="larger than"):
        _parse_reply(kind + b"%d\r\n" % length)


@DEADLINE
@given(
    st.integers(min_value=MAX_ANSWER_NESTING + 1, max_value=50_000), st.sampled_from([b"*", b"~", b">", b"%"])
)
def test_a_redis_reply_nested_past_the_bound_is_refused(depth: int, kind: bytes) -> None:
    with pytest.raises(ReplyOutOfBoundsError, match="nested deeper"):
        _parse_reply((kind + b"1\r\n") * depth + b":1\r\n")
