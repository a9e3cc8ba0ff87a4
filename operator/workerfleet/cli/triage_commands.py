"""`kubectl workerfleet review|dlq`: the review inbox and the dead letters of a WorkerPool.

    review ls POOL                          id, type, age, the handler's reason, attempts
    review show POOL ID                     the envelope; the payload as JSON, cut at 4 KiB
    review approve POOL ID... [--note T]    back to the pool's queue, marked approved (job.approval)
    review reject POOL ID... --reason T     to the dead letters, lastFailure.reason Rejected
    dlq ls|show POOL [filters]              the dead letters (filters: --type --reason --id
                                            --older-than --newer-than; ages from when they got there)
    dlq replay POOL [filters] [--dry-run] [--rate N] [--limit N] [--force]
                                            back to the pool's queue, attempts counted afresh; a keyed
                                            job whose key completed is skipped unless --force
    dlq purge POOL [filters] [--yes]        drop for good, keeping nothing; asks first unless --yes

The pool, its JobTypes and its queue credentials are read with your own RBAC (kubectl's flags pick the
cluster and identity): you need get on the WorkerPool, its JobTypes and the Secrets its queue auth
names (or WORKERFLEET_QUEUE_USERNAME/_PASSWORD set). Each move is one step on the queue server, so an
interrupted command leaves every job in exactly one place: run it again to finish. A command that moved
jobs records a summary Event on the pool (who, how many, which filter; needs create on events).
Exit codes: 1 a purge not confirmed, 2 the pool or a named job is not found, 4 the cluster refused,
5 the queue server is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from workerfleet import triage
from workerfleet.kube.client import Kube
from workerfleet.kube.rest import ApiError
from workerfleet.producer import InvalidJob, parse_duration
from workerfleet.worker.backend import BackendUnavailable
from workerfleet.worker.inbox import Inbox, open_inbox

EXIT_CANCELLED = 1
EXIT_NOT_FOUND = 2
EXIT_REFUSED = 4
EXIT_QUEUE_UNREACHABLE = 5
COMPONENT = "kubectl-workerfleet"
COMMANDS = ("review", "dlq")
Write = Callable[[str], None]


def _seconds(text: str) -> int:
    try:
        return parse_duration(text)
    except InvalidJob:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration such as 90s, 10m, 2h or 1h30m"
        ) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number above 0")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number above 0")
    return int(text)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", dest="job_types", action="append", default=[], help="job type (repeatable)")
    parser.add_argument("--reason", dest="reasons", action="append", default=[], help="lastFailure.reason")
    parser.add_argument("--id", dest="ids", action="append", default=[], help="job id (repeatable)")
    parser.add_argument("--older-than", type=_seconds, help="in the queue longer than this (90s, 10m, 2h)")
    parser.add_argument("--newer-than", type=_seconds, help="in the queue at most this long")


def add_commands(commands: Any, add_cluster_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
    """`review` and `dlq`, each with its actions, onto the plugin's sub-commands."""
    review = commands.add_parser("review", help="the pool's review inbox: ls, show, approve, reject")
    review_actions = review.add_subparsers(dest="action", required=True)
    dlq = commands.add_parser("dlq", help="the pool's dead letters: ls, show, replay, purge")
    dlq_actions = dlq.add_subparsers(dest="action", required=True)

    def action(actions: Any, name: str, help_text: str, *, filters: bool) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        parser.add_argument("name", help="name of the WorkerPool")
        add_cluster_arguments(parser)
        if filters:
            _add_filters(parser)
        return parser

    for actions in (review_actions, dlq_actions):
        filters = actions is dlq_actions
        listing = action(actions, "ls", "list the jobs, oldest first", filters=filters)
        listing.add_argument("--limit", type=_count, default=triage.LIST_MAX, help="show at most this many")
        action(actions, "show", "one job's envelope", filters=filters).add_argument("job_id", metavar="ID")
    approve = action(review_actions, "approve", "back to the pool's queue, marked approved", filters=False)
    approve.add_argument("ids", nargs="+", metavar="ID")
    approve.add_argument("--note", default="", help="a note the handler sees in job.approval")
    reject = action(review_actions, "reject", "to the dead letters with your reason", filters=False)
    reject.add_argument("ids", nargs="+", metavar="ID")
    reject.add_argument("--reason", required=True, dest="why", help="why: goes into lastFailure.message")
    replay = action(dlq_actions, "replay", "back to the pool's queue", filters=True)
    purge = action(dlq_actions, "purge", "drop for good (nothing keeps a copy)", filters=True)
    for moving in (replay, purge):
        moving.add_argument(
            "--dry-run", action="store_true", help="print exactly what would move; move nothing"
        )
        moving.add_argument("--limit", type=_count, help="move at most this many")
    replay.add_argument("--rate", type=_positive, help="jobs per second at most (default: no bound)")
    replay.add_argument("--force", action="store_true", help="replay jobs whose idempotency key completed")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _filter_of(args: argparse.Namespace) -> triage.Filter:
    return triage.Filter(
        job_types=tuple(getattr(args, "job_types", ())),
        reasons=tuple(getattr(args, "reasons", ())),
        ids=tuple(getattr(args, "ids", ())),
        older_than_seconds=getattr(args, "older_than", None),
        newer_than_seconds=getattr(args, "newer_than", None),
    )


def _table(entries: list[triage.Entry], write: Write) -> None:
    now = triage.utc_now()
    rows = [
        (
            entry.id,
            entry.job_type,
            triage.age(entry, now),
            str(entry.envelope.attempt if entry.envelope else "-"),
            entry.reason,
            entry.message,
        )
        for entry in entries
    ]
    header = ("ID", "TYPE", "AGE", "ATTEMPTS", "REASON", "MESSAGE")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(5)]
    for row in [header, *rows]:
        write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[5])


def _look(args: argparse.Namespace, pool: triage.Pool, entries: list[triage.Entry], write: Write) -> int:
    """ls and show."""
    now = triage.utc_now()
    selection = _filter_of(args)
    matching = [entry for entry in entries if selection.matches(entry, now)]
    if args.action == "ls":
        _table(matching[: args.limit], write)
        return 0
    found = [entry for entry in matching if entry.id == args.job_id]
    if not found:
        write(f"no job {args.job_id} in the {_box(args)} of WorkerPool {pool.namespace}/{pool.name}")
        return EXIT_NOT_FOUND
    write("\n---\n".join(triage.show(entry) for entry in found))
    return 0


async def _plan(
    args: argparse.Namespace, pool: triage.Pool, inbox: Inbox, entries: list[triage.Entry], write: Write
) -> triage.Plan:
    now = triage.utc_now()
    if args.action in ("approve", "reject"):
        approve = args.action == "approve"
        text = args.note if approve else args.why
        return triage.plan_review(pool, entries, args.ids, approve=approve, by=args.who, text=text, now=now)
    selection = _filter_of(args)
    if args.action == "purge":
        return triage.plan_purge(entries, selection, limit=args.limit, now=now)
    matching = [entry for entry in entries if selection.matches(entry, now)]
    completed = await triage.completed_keys(inbox, pool, matching)
    if None in completed.values():
        write(
            "note: this server keeps no completed idempotency keys (no idempotencyStore): "
            "keyed jobs are replayed without that check"
        )
    return triage.plan_replay(
        pool, entries, selection, completed=completed, force=args.force, limit=args.limit, now=now
    )


def _box(args: argparse.Namespace) -> triage.Box:
    return triage.Box.REVIEW if args.command == "review" else triage.Box.DEAD_LETTERS


async def _run(
    args: argparse.Namespace, pool: triage.Pool, write: Write, confirm: Callable[[str], bool]
) -> tuple[int, triage.Plan | None, int]:
    """The command against the queue server: exit code, the plan carried out (None when nothing moved
    or could have), and how many jobs moved."""
    inbox = open_inbox(pool.queue, pool.credentials.queue, pool.credentials.store)
    await inbox.connect()
    try:
        entries = await triage.browse_with(
            inbox, pool, _box(args), getattr(args, "limit", None) or triage.LIST_MAX
        )
        if args.action in ("ls", "show"):
            return _look(args, pool, entries, write), None, 0
        plan = await _plan(args, pool, inbox, entries, write)
        for skip in plan.skipped:
            write(f"skipped {skip.entry.id}: {skip.why}")
        for job_id in plan.missing_ids:
            write(
                f"not found: no job {job_id} in the {_box(args)} of WorkerPool {pool.namespace}/{pool.name}"
            )
        code = EXIT_NOT_FOUND if plan.missing_ids else 0
        dry_run = getattr(args, "dry_run", False)
        if dry_run or not plan.moves:
            for move in plan.moves:
                write(f"would {_line(plan.verb, move)}")
            prefix = "dry run: " if dry_run else ""
            write(f"{prefix}{len(plan.moves)} to {plan.verb}, {len(plan.skipped)} skipped")
            return code, None, 0
        if args.action == "purge" and not args.yes:
            question = (
                f"purge {len(plan.moves)} dead letters of WorkerPool {pool.namespace}/{pool.name} for good? "
                "Nothing keeps a copy. [y/N] "
            )
            if not confirm(question):
                write("purge cancelled, nothing removed (on no terminal, confirm with --yes)")
                return EXIT_CANCELLED, None, 0

        def report(move: triage.Move, moved: bool) -> None:
            if moved:
                write(_line(DONE[plan.verb], move))
            else:
                write(f"gone meanwhile: {move.entry.id} (another caller moved it)")

        outcome = await triage.carry_out(inbox, plan, rate=getattr(args, "rate", None), report=report)
        write(
            f"{len(outcome.moved)} {DONE[plan.verb]}, {len(plan.skipped)} skipped, "
            f"{len(outcome.gone)} gone meanwhile"
        )
        return code, plan, len(outcome.moved)
    finally:
        await inbox.close()


def _line(verb: str, move: triage.Move) -> str:
    where = f"to {move.destination}" if move.destination is not None else "(dropped)"
    return f"{verb} {move.entry.id} ({move.entry.job_type}) from {move.entry.held.queue} {where}"


DONE = {"approve": "approved", "reject": "rejected", "replay": "replayed", "purge": "purged"}
EVENT_REASONS = {
    "approve": triage.TriageReason.REVIEW_APPROVED,
    "reject": triage.TriageReason.REVIEW_REJECTED,
    "replay": triage.TriageReason.DEAD_LETTERS_REPLAYED,
    "purge": triage.TriageReason.DEAD_LETTERS_PURGED,
}


def _summary(args: argparse.Namespace, plan: triage.Plan, moved: int) -> str:
    what = "review jobs" if args.command == "review" else "dead letters"
    selection = ", ".join(args.ids) if args.command == "review" else _filter_of(args).describe()
    extra = f"; reason: {args.why}" if args.action == "reject" else ""
    return f"{args.who} {DONE[args.action]} {moved} {what} ({selection}){extra}; {len(plan.skipped)} skipped"


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(question).strip().lower() in ("y", "yes")


def run(args: argparse.Namespace, api: Kube, write: Write, confirm: Callable[[str], bool] = _ask) -> int:
    """One review or dlq command, as the user `api` speaks for."""
    try:
        pool, document = triage.read_pool(api, args.namespace, args.name)
    except LookupError as error:
        write(str(error))
        return EXIT_NOT_FOUND
    except InvalidJob as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_REFUSED
    args.who = api.whoami() if args.action not in ("ls", "show") else ""
    try:
        code, plan, moved = asyncio.run(_run(args, pool, write, confirm))
    except BackendUnavailable as error:
        print(f"error: the queue server of WorkerPool {pool.namespace}/{pool.name}: {error}", file=sys.stderr)
        return EXIT_QUEUE_UNREACHABLE
    if plan is not None and moved:
        try:
            api.record_event(
                document,
                reason=EVENT_REASONS[args.action],
                message=_summary(args, plan, moved),
                component=COMPONENT,
            )
        except ApiError as error:
            print(f"warning: the summary Event was not recorded: {error}", file=sys.stderr)
    return code
