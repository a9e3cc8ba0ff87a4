"""The review inbox and the dead letters of a WorkerPool: list them, approve or reject reviewed jobs,
replay or purge dead letters. What `kubectl workerfleet review|dlq` runs; usable from Python as well:

    from workerfleet import triage

    pool = triage.from_cluster("media", "thumbs")
    entries = asyncio.run(triage.browse(pool, triage.Box.DEAD_LETTERS))
    plan = triage.plan_replay(pool, entries, triage.Filter(job_types=("resize",)), by="jane")
    report = asyncio.run(triage.carry_out(pool, plan, rate=50))

Which queues: the review queues (`spec.review.queue`) of the JobTypes the pool serves, and their
dead-letter queues (`spec.deadLetter.queue`) plus the pool's own, `<queue>.dlq` (messages no JobType
could take). Approved and replayed jobs go back to the pool's queue; rejected ones to their JobType's
dead-letter queue, else the pool's. Every move is one step on the server (see `worker/inbox.py`): a
move cut short by a crash leaves the job where it was, never in both places.

Pure parts (filters, the envelope each move writes, the plan) take plain values; `browse` and
`carry_out` are the I/O.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from workerfleet.api.base import API_VERSION
from workerfleet.api.jobtype import JobTypeSpec, Priority
from workerfleet.api.workerpool import Queue, WorkerPoolSpec
from workerfleet.kube.options import ClusterOptions
from workerfleet.planners.held import dead_letter_queues, pool_dead_letter_queue, review_queues
from workerfleet.producer import InvalidJob, PoolCredentials, cluster_credentials
from workerfleet.worker.envelope import (
    Approval,
    Envelope,
    FailureRecord,
    MalformedEnvelope,
    decode,
    encode,
    peek_fields,
    with_failure,
)
from workerfleet.worker.inbox import Held, Inbox, level_queue_name, open_inbox
from workerfleet.worker.policy import idempotency_key

if TYPE_CHECKING:
    from workerfleet.kube.client import Kube

TRIAGE_COMPONENT = "triage"
REJECTED_REASON = "Rejected"
"""lastFailure.reason of a job a person rejected in review."""
SHOW_PAYLOAD_MAX_CHARS = 4096
"""`show` prints at most this much of a payload's JSON, and says how much more there is."""
LIST_MAX = 10_000


class TriageReason(StrEnum):
    """Reasons of the summary Event each command that moves jobs leaves on the pool."""

    REVIEW_APPROVED = "ReviewApproved"
    REVIEW_REJECTED = "ReviewRejected"
    DEAD_LETTERS_REPLAYED = "DeadLettersReplayed"
    DEAD_LETTERS_PURGED = "DeadLettersPurged"


class Box(StrEnum):
    REVIEW = "review"
    DEAD_LETTERS = "dead letters"


@dataclass(frozen=True)
class Pool:
    """A pool as the commands need it: its queue, the JobTypes it serves, credentials to its server."""

    namespace: str
    name: str
    queue: Queue
    job_types: dict[str, JobTypeSpec]
    credentials: PoolCredentials

    @property
    def pool_dead_letter_queue(self) -> str:
        return pool_dead_letter_queue(self.queue)

    def queues(self, box: Box) -> list[str]:
        """The queues of `box`, each once, in a fixed order."""
        if box == Box.REVIEW:
            return review_queues(self.job_types)
        return dead_letter_queues(self.queue, self.job_types)

    def queue_of(self, job_type: str) -> str:
        """Where a job of `job_type` goes back to: its JobType's priority level of the pool's queue."""
        spec = self.job_types.get(job_type)
        return level_queue_name(self.queue, spec.priority if spec is not None else Priority.NORMAL)

    def dead_letter_queue_of(self, job_type: str) -> str:
        spec = self.job_types.get(job_type)
        if spec is not None and spec.dead_letter is not None:
            return spec.dead_letter.queue
        return self.pool_dead_letter_queue


@dataclass(frozen=True)
class Entry:
    """One job in a review or dead-letter queue; `envelope` is None for a message that is not one."""

    held: Held
    envelope: Envelope | None

    @property
    def id(self) -> str:
        if self.envelope is not None:
            return self.envelope.id
        found = peek_fields(self.held.body).get("id")
        return found if isinstance(found, str) else "(no id)"

    @property
    def job_type(self) -> str:
        return self.envelope.type if self.envelope is not None else "(malformed)"

    @property
    def reason(self) -> str:
        failure = self.envelope.last_failure if self.envelope is not None else None
        return failure.reason if failure is not None else ""

    @property
    def message(self) -> str:
        failure = self.envelope.last_failure if self.envelope is not None else None
        return failure.message if failure is not None else ""

    def entered_at(self) -> datetime | None:
        """When the job came to this queue (its lastFailure), else when it was enqueued."""
        if self.envelope is None:
            return None
        failure = self.envelope.last_failure
        return failure.at if failure is not None else self.envelope.enqueued_at


def entry_of(held: Held) -> Entry:
    try:
        return Entry(held, decode(held.body))
    except MalformedEnvelope:
        return Entry(held, None)


@dataclass(frozen=True)
class Filter:
    """Which jobs a command acts on; every given criterion must hold. Ages count from when the job
    entered the queue (its lastFailure.at)."""

    job_types: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    older_than_seconds: int | None = None
    newer_than_seconds: int | None = None

    def matches(self, entry: Entry, now: datetime) -> bool:
        if (
            (self.ids and entry.id not in self.ids)
            or (self.job_types and entry.job_type not in self.job_types)
            or (self.reasons and entry.reason not in self.reasons)
        ):
            return False
        if self.older_than_seconds is None and self.newer_than_seconds is None:
            return True
        entered = entry.entered_at()
        if entered is None:
            return False
        age = (now - entered).total_seconds()
        return (self.older_than_seconds is None or age >= self.older_than_seconds) and (
            self.newer_than_seconds is None or age <= self.newer_than_seconds
        )

    def describe(self) -> str:
        """The filter as the command line gave it, for the summary Event."""
        parts = [
            *(f"--type {name}" for name in self.job_types),
            *(f"--reason {reason}" for reason in self.reasons),
            *(f"--id {job_id}" for job_id in self.ids),
        ]
        if self.older_than_seconds is not None:
            parts.append(f"--older-than {self.older_than_seconds}s")
        if self.newer_than_seconds is not None:
            parts.append(f"--newer-than {self.newer_than_seconds}s")
        return " ".join(parts) or "no filter"


@dataclass(frozen=True)
class Move:
    """Take `entry` off its queue and put `body` on `destination` (drop it when None)."""

    entry: Entry
    destination: str | None
    body: bytes


@dataclass(frozen=True)
class Skip:
    entry: Entry
    why: str


@dataclass(frozen=True)
class Plan:
    verb: str
    """What the moves do, for people: approve, reject, replay, purge."""
    moves: tuple[Move, ...]
    skipped: tuple[Skip, ...] = ()
    missing_ids: tuple[str, ...] = ()
    """Ids asked for by name that no queue of the box holds."""


def approved(envelope: Envelope, *, by: str, note: str, now: datetime) -> Envelope:
    """The job back for its handler, marked approved by `by`: the handler sees `job.approval`."""
    return envelope.model_copy(update={"approval": Approval(by=by, note=note, at=now)})


def rejected(envelope: Envelope, *, by: str, reason: str, now: datetime, pool: str) -> Envelope:
    """The job as a dead letter, its lastFailure saying who rejected it and why."""
    failure = FailureRecord(
        reason=REJECTED_REASON,
        message=f"rejected by {by}: {reason}",
        attempt=envelope.attempt,
        at=now,
        pool=pool,
    )
    return with_failure(envelope, failure, next_attempt=False)


def replayed(envelope: Envelope) -> Envelope:
    """The dead letter as a job again, with its attempts counted afresh; lastFailure stays, to say
    what happened before. enqueuedAt stays too: a JobType's deadline still counts from it."""
    return envelope.model_copy(update={"attempt": 1, "approval": None})


def completed_key(entry: Entry, specs: dict[str, JobTypeSpec]) -> str | None:
    """The idempotency key (`<type>:<value>`) the worker records when the job completes, if keyed."""
    envelope = entry.envelope
    spec = specs.get(entry.job_type)
    if envelope is None or spec is None or spec.idempotency is None:
        return None
    value = idempotency_key(envelope.payload, spec.idempotency.key_field)
    return f"{envelope.type}:{value}" if value is not None else None


def _by_ids(entries: Sequence[Entry], ids: Sequence[str]) -> tuple[list[Entry], tuple[str, ...]]:
    chosen = [entry for entry in entries if entry.id in ids]
    found = {entry.id for entry in chosen}
    return chosen, tuple(job_id for job_id in dict.fromkeys(ids) if job_id not in found)


def plan_review(
    pool: Pool,
    entries: Sequence[Entry],
    ids: Sequence[str],
    *,
    approve: bool,
    by: str,
    text: str,
    now: datetime,
) -> Plan:
    """Approve (back to the pool's queue, marked) or reject (to the dead letters, with `text` as the
    reason) exactly the jobs named."""
    chosen, missing = _by_ids(entries, ids)
    moves: list[Move] = []
    skipped: list[Skip] = []
    for entry in chosen:
        if entry.envelope is None:
            skipped.append(Skip(entry, "not a job envelope: replay or purge it from the dead letters"))
        elif approve:
            moves.append(
                Move(
                    entry,
                    pool.queue_of(entry.job_type),
                    encode(approved(entry.envelope, by=by, note=text, now=now)),
                )
            )
        else:
            body = encode(rejected(entry.envelope, by=by, reason=text, now=now, pool=pool.name))
            moves.append(Move(entry, pool.dead_letter_queue_of(entry.job_type), body))
    return Plan("approve" if approve else "reject", tuple(moves), tuple(skipped), missing)


def plan_replay(
    pool: Pool,
    entries: Sequence[Entry],
    selection: Filter,
    *,
    completed: dict[str, bool | None],
    force: bool,
    limit: int | None,
    now: datetime,
) -> Plan:
    """Dead letters matching `selection` back onto the pool's queue, at most `limit`; a keyed job whose
    key completed meanwhile (`completed`, by key) is skipped unless `force`, since a worker would only
    acknowledge it as a duplicate, or, with force, run it again."""
    moves: list[Move] = []
    skipped: list[Skip] = []
    for entry in entries:
        if not selection.matches(entry, now):
            continue
        if entry.envelope is None:
            skipped.append(Skip(entry, "not a job envelope: a worker would dead-letter it again"))
            continue
        if entry.job_type not in pool.job_types:
            skipped.append(Skip(entry, f"pool {pool.name} does not serve job type {entry.job_type}"))
            continue
        key = completed_key(entry, pool.job_types)
        if key is not None and completed.get(key) and not force:
            skipped.append(Skip(entry, f"idempotency key {key} completed already (--force replays it)"))
            continue
        if limit is not None and len(moves) >= limit:
            skipped.append(Skip(entry, f"past --limit {limit}"))
            continue
        moves.append(Move(entry, pool.queue_of(entry.job_type), encode(replayed(entry.envelope))))
    return Plan("replay", tuple(moves), tuple(skipped))


def plan_purge(entries: Sequence[Entry], selection: Filter, *, limit: int | None, now: datetime) -> Plan:
    """Dead letters matching `selection` dropped for good: nothing keeps a copy."""
    matching = [entry for entry in entries if selection.matches(entry, now)]
    kept = matching[:limit] if limit is not None else matching
    return Plan("purge", tuple(Move(entry, None, b"") for entry in kept))


def show(entry: Entry) -> str:
    """The envelope as JSON, the payload cut at SHOW_PAYLOAD_MAX_CHARS."""
    if entry.envelope is None:
        raw = entry.held.body[:SHOW_PAYLOAD_MAX_CHARS].decode(errors="replace")
        more = len(entry.held.body) - SHOW_PAYLOAD_MAX_CHARS
        return f"(not a job envelope) {raw}" + (f"\n... {more} more bytes" if more > 0 else "")
    document = json.loads(encode(entry.envelope))
    payload = json.dumps(document.pop("payload", None), indent=2, sort_keys=True)
    lines = [json.dumps(document, indent=2, sort_keys=True), "payload:"]
    if len(payload) > SHOW_PAYLOAD_MAX_CHARS:
        lines.append(payload[:SHOW_PAYLOAD_MAX_CHARS])
        lines.append(f"... {len(payload) - SHOW_PAYLOAD_MAX_CHARS} more characters")
    else:
        lines.append(payload)
    return "\n".join(lines)


def read_pool(api: Kube, namespace: str, name: str) -> tuple[Pool, dict[str, Any]]:
    """The pool read with the caller's own RBAC: the WorkerPool, the JobTypes it serves (those missing
    are left out), and its queue credentials (InvalidJob when the caller may not read their Secret);
    also the WorkerPool as stored, for the summary Event. LookupError when there is no such pool."""
    document = api.read(API_VERSION, "WorkerPool", namespace, name)
    if document is None:
        raise LookupError(f"WorkerPool {namespace}/{name} not found")
    spec = WorkerPoolSpec.model_validate(document.get("spec"))
    job_types: dict[str, JobTypeSpec] = {}
    for job_type in spec.job_types:
        found = api.read(API_VERSION, "JobType", namespace, job_type)
        if found is not None:
            job_types[job_type] = JobTypeSpec.model_validate(found.get("spec"))
    credentials = cluster_credentials(api, namespace, name, spec.queue)
    return Pool(namespace, name, spec.queue, job_types, credentials), document


def from_cluster(namespace: str, name: str, cluster: ClusterOptions | None = None) -> Pool:
    """The pool from the cluster (the kubeconfig's current context, or `cluster`'s choice)."""
    from workerfleet.kube.client import Kube  # noqa: PLC0415  (only this path needs a cluster)
    from workerfleet.kube.rest import Rest  # noqa: PLC0415

    return read_pool(Kube(Rest(cluster or ClusterOptions(component=TRIAGE_COMPONENT))), namespace, name)[0]


def _inbox(pool: Pool) -> Inbox:
    return open_inbox(pool.queue, pool.credentials.queue, pool.credentials.store)


async def browse_with(inbox: Inbox, pool: Pool, box: Box, limit: int = LIST_MAX) -> list[Entry]:
    entries: list[Entry] = []
    for queue in pool.queues(box):
        entries.extend(entry_of(held) for held in await inbox.browse(queue, limit))
    return entries


async def browse(pool: Pool, box: Box, limit: int = LIST_MAX) -> list[Entry]:
    """The jobs in the box's queues, oldest first per queue, left where they are."""
    inbox = _inbox(pool)
    await inbox.connect()
    try:
        return await browse_with(inbox, pool, box, limit)
    finally:
        await inbox.close()


async def depths(pool: Pool) -> dict[Box, int]:
    """How many jobs wait in review and in the dead letters."""
    inbox = _inbox(pool)
    await inbox.connect()
    try:
        return {box: sum([await inbox.depth(queue) for queue in pool.queues(box)]) for box in Box}
    finally:
        await inbox.close()


@dataclass
class Outcome:
    moved: list[Move] = field(default_factory=list)
    gone: list[Move] = field(default_factory=list)
    """Moves whose job another caller had taken meanwhile: nothing was written for them."""


async def carry_out(
    inbox: Inbox,
    plan: Plan,
    *,
    rate: float | None = None,
    report: Callable[[Move, bool], None] = lambda move, moved: None,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Each move of the plan, one step on the server each, at most `rate` per second; `report` hears
    of each as it happens (so a caller cut short has said what was done)."""
    outcome = Outcome()
    interval = 1.0 / rate if rate else 0.0
    next_at = clock()
    for move in plan.moves:
        wait = next_at - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        next_at = max(next_at, clock()) + interval
        moved = await inbox.transfer(move.entry.held, move.destination, move.body)
        (outcome.moved if moved else outcome.gone).append(move)
        report(move, moved)
    return outcome


async def completed_keys(inbox: Inbox, pool: Pool, entries: Iterable[Entry]) -> dict[str, bool | None]:
    keys = {key for entry in entries if (key := completed_key(entry, pool.job_types)) is not None}
    return {key: await inbox.completed(key) for key in sorted(keys)}


def age(entry: Entry, now: datetime) -> str:
    entered = entry.entered_at()
    if entered is None:
        return "-"
    seconds = int((now - entered).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def utc_now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "Box",
    "Entry",
    "Filter",
    "InvalidJob",
    "Plan",
    "Pool",
    "browse",
    "carry_out",
    "depths",
    "from_cluster",
    "plan_purge",
    "plan_replay",
    "plan_review",
    "read_pool",
]
