"""The review and dead-letter commands' pure parts: which jobs a filter picks, what each move writes, and
the plan a command carries out; the command line's refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workerfleet import triage
from workerfleet.api.credentials import Credentials
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.workerpool import Queue
from workerfleet.cli.kubectl_plugin import build_parser
from workerfleet.producer import PoolCredentials
from workerfleet.worker.envelope import FailureRecord, decode, encode, new_envelope, with_failure
from workerfleet.worker.inbox import Held

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
KEYED = JobTypeSpec.model_validate(
    {
        "lane": "fast",
        "timeoutSeconds": 10,
        "deadLetter": {"queue": "resize.dlq"},
        "review": {"queue": "resize.review"},
        "idempotency": {"keyField": "id"},
    }
)
PLAIN = JobTypeSpec.model_validate({"lane": "fast", "timeoutSeconds": 10})
POOL = triage.Pool(
    namespace="media",
    name="thumbs",
    queue=Queue.model_validate({"redis": {"address": "redis:6379", "list": "jobs"}}),
    job_types={"resize": KEYED, "crop": PLAIN},
    credentials=PoolCredentials(Credentials(), Credentials()),
)


def entry(
    job_id: str,
    *,
    job_type: str = "resize",
    reason: str = "AttemptsExhausted",
    age: float = 600,
    queue: str = "jobs.dlq",
) -> triage.Entry:
    envelope = new_envelope(job_type, {"id": job_id}, now=NOW - timedelta(hours=1), job_id=job_id)
    failure = FailureRecord(reason=reason, attempt=3, at=NOW - timedelta(seconds=age))
    body = encode(with_failure(envelope, failure, next_attempt=False).model_copy(update={"attempt": 3}))
    return triage.entry_of(Held(queue, body, body))


def malformed(queue: str = "jobs.dlq") -> triage.Entry:
    return triage.entry_of(Held(queue, b"not json", b"not json"))


@pytest.mark.parametrize(
    ("selection", "picked"),
    [
        (triage.Filter(), ["a", "b", "c"]),
        (triage.Filter(job_types=("crop",)), ["c"]),
        (triage.Filter(reasons=("NeedsReview",)), ["b"]),
        (triage.Filter(ids=("a", "c")), ["a", "c"]),
        (triage.Filter(older_than_seconds=120), ["a"]),
        (triage.Filter(newer_than_seconds=120), ["b", "c"]),
        (triage.Filter(older_than_seconds=30, newer_than_seconds=120), ["b"]),
        (triage.Filter(job_types=("resize",), older_than_seconds=30), ["a", "b"]),
    ],
)
def test_a_filter_picks_jobs_that_meet_every_criterion(selection: triage.Filter, picked: list[str]) -> None:
    entries = [
        entry("a", age=600),
        entry("b", reason="NeedsReview", age=60),
        entry("c", job_type="crop", age=10),
    ]
    assert [found.id for found in entries if selection.matches(found, NOW)] == picked


def test_an_age_filter_leaves_out_a_message_that_is_no_envelope() -> None:
    assert triage.Filter().matches(malformed(), NOW)
    assert not triage.Filter(older_than_seconds=1).matches(malformed(), NOW)


def test_the_filter_describes_itself_as_given_on_the_command_line() -> None:
    selection = triage.Filter(job_types=("resize",), reasons=("Crashed",), older_than_seconds=60)
    assert selection.describe() == "--type resize --reason Crashed --older-than 60s"
    assert triage.Filter().describe() == "no filter"


def test_replay_moves_matching_jobs_to_the_pool_queue_with_attempts_counted_afresh() -> None:
    plan = triage.plan_replay(
        POOL,
        [entry("a"), entry("b", job_type="crop")],
        triage.Filter(job_types=("resize",)),
        completed={},
        force=False,
        limit=None,
        now=NOW,
    )
    assert [(move.entry.id, move.destination) for move in plan.moves] == [("a", "jobs")]
    replayed = decode(plan.moves[0].body)
    assert replayed.attempt == 1
    assert replayed.last_failure is not None  # what happened before stays readable
    assert replayed.enqueued_at == NOW - timedelta(hours=1)  # deadlines still count from the start


@pytest.mark.parametrize(
    ("completed", "force", "moved", "why"),
    [
        ({"resize:a": True}, False, [], "idempotency key resize:a completed already (--force replays it)"),
        ({"resize:a": True}, True, ["a"], None),
        ({"resize:a": False}, False, ["a"], None),
        ({"resize:a": None}, False, ["a"], None),  # the server cannot tell: replayed, with a note
    ],
)
def test_a_job_whose_key_completed_is_replayed_only_with_force(
    completed: dict[str, bool | None], force: bool, moved: list[str], why: str | None
) -> None:
    plan = triage.plan_replay(
        POOL, [entry("a")], triage.Filter(), completed=completed, force=force, limit=None, now=NOW
    )
    assert [move.entry.id for move in plan.moves] == moved
    assert [skip.why for skip in plan.skipped] == ([why] if why else [])


def test_replay_skips_what_a_worker_would_dead_letter_again_and_stops_at_the_limit() -> None:
    entries = [entry("a"), malformed(), entry("x", job_type="unknown"), entry("b"), entry("c")]
    plan = triage.plan_replay(POOL, entries, triage.Filter(), completed={}, force=False, limit=1, now=NOW)
    assert [move.entry.id for move in plan.moves] == ["a"]
    assert [skip.why for skip in plan.skipped] == [
        "not a job envelope: a worker would dead-letter it again",
        "pool thumbs does not serve job type unknown",
        "past --limit 1",
        "past --limit 1",
    ]


def test_approve_sends_exactly_the_named_jobs_back_marked_and_names_the_missing() -> None:
    entries = [entry("a", reason="NeedsReview", queue="resize.review"), entry("b", queue="resize.review")]
    plan = triage.plan_review(POOL, entries, ["a", "zz"], approve=True, by="jane", text="fine", now=NOW)
    assert [(move.entry.id, move.destination) for move in plan.moves] == [("a", "jobs")]
    approval = decode(plan.moves[0].body).approval
    assert approval is not None
    assert (approval.by, approval.note, approval.at) == ("jane", "fine", NOW)
    assert plan.missing_ids == ("zz",)


def test_reject_dead_letters_with_who_and_why_to_the_job_types_queue_else_the_pools() -> None:
    entries = [entry("a", queue="resize.review"), entry("c", job_type="crop", queue="resize.review")]
    plan = triage.plan_review(POOL, entries, ["a", "c"], approve=False, by="jane", text="bad data", now=NOW)
    assert [(move.entry.id, move.destination) for move in plan.moves] == [
        ("a", "resize.dlq"),
        ("c", "jobs.dlq"),
    ]
    failure = decode(plan.moves[0].body).last_failure
    assert failure is not None
    assert (failure.reason, failure.message, failure.pool) == (
        "Rejected",
        "rejected by jane: bad data",
        "thumbs",
    )


def test_purge_drops_the_matching_jobs_up_to_the_limit() -> None:
    plan = triage.plan_purge([entry("a"), malformed(), entry("b")], triage.Filter(), limit=2, now=NOW)
    assert [(move.entry.id, move.destination) for move in plan.moves] == [("a", None), ("(no id)", None)]


def test_the_pool_queues_come_from_the_job_types_it_serves_and_its_own_dead_letter_queue() -> None:
    assert POOL.queues(triage.Box.REVIEW) == ["resize.review"]
    assert POOL.queues(triage.Box.DEAD_LETTERS) == ["resize.dlq", "jobs.dlq"]


def test_show_cuts_a_large_payload_and_says_how_much_more_there_is() -> None:
    envelope = new_envelope("resize", {"blob": "x" * 10_000}, now=NOW, job_id="big")
    shown = triage.show(triage.entry_of(Held("q", encode(envelope), b"")))
    payload_chars = len(json.dumps({"blob": "x" * 10_000}, indent=2))
    assert '"id": "big"' in shown
    assert shown.splitlines()[-1] == f"... {payload_chars - triage.SHOW_PAYLOAD_MAX_CHARS} more characters"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["dlq", "replay", "thumbs", "--rate", "0"], "argument --rate: '0' must be a number above 0"),
        (
            ["dlq", "replay", "thumbs", "--limit", "-1"],
            "argument --limit: '-1' must be a whole number above 0",
        ),
        (["dlq", "ls", "thumbs", "--older-than", "soon"], "argument --older-than: 'soon' is not a duration"),
        (["review", "reject", "thumbs", "a"], "the following arguments are required: --reason"),
        (["review", "approve", "thumbs"], "the following arguments are required: ID"),
    ],
)
def test_bad_arguments_are_refused_naming_the_flag(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(arguments)
    assert message in capsys.readouterr().err


def test_the_command_line_reads_pool_ids_and_filters() -> None:
    args: Any = build_parser().parse_args(
        [
            "-n",
            "media",
            "dlq",
            "replay",
            "thumbs",
            "--type",
            "a",
            "--type",
            "b",
            "--older-than",
            "1m",
            "--dry-run",
        ]
    )
    assert (args.command, args.action, args.name, args.job_types, args.older_than, args.dry_run) == (
        "dlq", "replay", "thumbs", ["a", "b"], 60, True,
    )  # fmt: skip
