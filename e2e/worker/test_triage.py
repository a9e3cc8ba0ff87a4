"""`kubectl workerfleet review|dlq` as a user runs it: the pool and its JobType in a real cluster, real
worker processes on a real Redis list, Redis stream and RabbitMQ, the plugin as its own process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from devenv.cluster import Cluster
from devenv.operator import OperatorProcess
from devenv.queues import QueueUnderTest, RabbitMQQueue, RedisListQueue, RedisStreamQueue
from devenv.waiting import eventually
from e2e.worker.conftest import POOL, Workers, probe_policies
from workerfleet.worker.envelope import FailureRecord, encode, new_envelope, with_failure

PLUGIN = Path(sys.executable).parent / "kubectl-workerfleet"
REVIEWER = "e2e-reviewer"
OLDER_THAN_SECONDS = 8
"""Between the dead letters a replay takes and the one it leaves: longer than two plugin runs, also on a
busy host (at 4 s, the dead letter to be left had grown old enough by the second run)."""


def _apply_pool(
    cluster: Cluster, namespace: str, queue: QueueUnderTest, auth: dict[str, Any] | None = None
) -> None:
    """The `probe` JobType the workers run, and the WorkerPool on `queue` (no replicas: the workers are
    this test's own processes)."""
    queue_spec = queue.spec()
    if auth is not None:
        next(iter(queue_spec.values()))["auth"] = auth
    documents = [
        {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "JobType",
            "metadata": {"name": "probe"},
            "spec": probe_policies(queue.name)["jobTypes"]["probe"],
        },
        {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": POOL},
            "spec": {
                "jobTypes": ["probe"],
                "replicas": 0,
                "template": {"spec": {"containers": [{"name": "worker", "image": "probe:1"}]}},
                "queue": queue_spec,
            },
        },
    ]
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input_text="\n---\n".join(yaml.safe_dump(d) for d in documents)
    )


def _plugin_command(cluster: Cluster, namespace: str, *arguments: str) -> tuple[list[str], dict[str, str]]:
    environment = {"PATH": os.environ.get("PATH", ""), "KUBECONFIG": str(cluster.kubeconfig)}
    return [str(PLUGIN), "-n", namespace, *arguments], environment


def _plugin(cluster: Cluster, namespace: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    command, environment = _plugin_command(cluster, namespace, *arguments)
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60, check=False)


def _enqueue(queue: QueueUnderTest, payloads: list[dict[str, Any]]) -> None:
    async def send() -> None:
        backend = queue.producer()
        await backend.connect()
        try:
            for payload in payloads:
                await backend.enqueue(
                    encode(new_envelope("probe", payload, now=_now(), job_id=payload["id"]))
                )
        finally:
            await backend.close()

    asyncio.run(send())


def _now() -> datetime:
    return datetime.now(UTC)


def _ids(queue: QueueUnderTest, name: str) -> list[str]:
    return [envelope.id for envelope in queue.entries(name)]


def _finished(probe_log: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in probe_log.read_text().splitlines() if line.strip()]
    return {line["id"]: line for line in lines if line["event"] == "finish"}


def _shows_r3_and_names_r9_missing(crds: Cluster, namespace: str) -> None:
    shown = _plugin(crds, namespace, "review", "show", POOL, "r3")
    assert shown.returncode == 0, shown.stderr
    assert '"id": "r3"' in shown.stdout, shown.stdout
    assert shown.stdout.split("payload:")[1].split() == ["{", '"fail":', '"review",', '"id":', '"r3"', "}"]
    missing = _plugin(crds, namespace, "review", "show", POOL, "r9")
    assert missing.returncode == 2, missing
    assert f"no job r9 in the review of WorkerPool {namespace}/{POOL}" in missing.stdout


def test_review_and_replay_move_exactly_the_jobs_named(
    crds: Cluster, namespace: str, queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    # Given a pool whose worker sends three jobs to review
    _apply_pool(crds, namespace, queue)
    workers.start(queue)
    fix = probe_log.with_name("fixed")
    review, dlq = f"{queue.name}.review", f"{queue.name}.dlq"
    _enqueue(queue, [{"id": f"r{n}", "fail": "review"} for n in (1, 2, 3)])
    eventually(lambda: len(_ids(queue, review)) == 3, what="the jobs in review")

    # When the review inbox is listed
    listed = _plugin(crds, namespace, "review", "ls", POOL)
    # Then it shows each job with its type, the handler's reason and its attempt
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [(row[0], row[1], row[3], row[4]) for row in rows] == [
        (f"r{n}", "probe", "1", "NeedsReview") for n in (1, 2, 3)
    ], listed.stdout
    assert "probe cannot tell" in listed.stdout
    # And one job's envelope, with its payload as JSON; an id not there is named
    _shows_r3_and_names_r9_missing(crds, namespace)

    # When r1 is approved and r2 rejected
    approved = _plugin(crds, namespace, "review", "approve", POOL, "r1", "--note", "checked by hand")
    rejected = _plugin(crds, namespace, "review", "reject", POOL, "r2", "--reason", "wrong input")
    assert approved.returncode == 0, approved.stderr
    assert rejected.returncode == 0, rejected.stderr
    # Then r1 runs again, its handler seeing the approval, and r2 is a dead letter saying why; r3 waits
    finished = eventually(lambda: _finished(probe_log).get("r1"), what="the approved job to finish")
    assert finished["approval"]["note"] == "checked by hand"
    assert _ids(queue, review) == ["r3"]
    rejected_letter = next(envelope for envelope in queue.entries(dlq) if envelope.id == "r2")
    assert rejected_letter.last_failure is not None
    assert rejected_letter.last_failure.reason == "Rejected"
    assert "wrong input" in rejected_letter.last_failure.message

    # Given two jobs dead-lettered by a bug, and a third some seconds later
    _enqueue(queue, [{"id": f"d{n}", "failUnless": str(fix)} for n in (1, 2)])
    eventually(lambda: {"d1", "d2"} <= set(_ids(queue, dlq)), what="d1 and d2 dead-lettered")
    time.sleep(OLDER_THAN_SECONDS)
    _enqueue(queue, [{"id": "d3", "failUnless": str(fix)}])
    eventually(lambda: "d3" in _ids(queue, dlq), what="d3 dead-lettered")

    # When the fix is in and the older dead letters are replayed, first as a dry run
    fix.touch()
    replay = [*("dlq", "replay", POOL, "--type", "probe", "--reason", "PermanentError")]
    replay += ["--older-than", f"{OLDER_THAN_SECONDS}s", "--rate", "50"]
    dry = _plugin(crds, namespace, *replay, "--dry-run")
    # Then the dry run names exactly d1 and d2 and moves nothing
    assert dry.returncode == 0, dry.stderr
    would = sorted(line.split()[2] for line in dry.stdout.splitlines() if line.startswith("would replay"))
    assert would == ["d1", "d2"], dry.stdout
    assert sorted(_ids(queue, dlq)) == ["d1", "d2", "d3", "r2"]

    done = _plugin(crds, namespace, *replay)
    # Then d1 and d2 run and finish; d3 (too new) and r2 (rejected) stay
    assert done.returncode == 0, done.stderr
    eventually(lambda: {"d1", "d2"} <= set(_finished(probe_log)), what="the replayed jobs to finish")
    assert sorted(_ids(queue, dlq)) == ["d3", "r2"]
    assert "d3" not in _finished(probe_log)
    # And the pool carries a summary Event naming who, how many and the filter
    events = crds.get("events", "--field-selector", f"involvedObject.name={POOL}", namespace=namespace)
    messages = {event["reason"]: event["message"] for event in events["items"]}
    filters = f"--type probe --reason PermanentError --older-than {OLDER_THAN_SECONDS}s"
    assert f"replayed 2 dead letters ({filters})" in messages["DeadLettersReplayed"], messages
    assert "approved 1 review jobs (r1)" in messages["ReviewApproved"], messages


def _dead_letters(queue: QueueUnderTest, count: int, ids: list[str] | None = None) -> list[str]:
    """`count` dead letters (or those with `ids`) put straight onto the pool's dead-letter queue."""
    dlq: QueueUnderTest
    if isinstance(queue, RabbitMQQueue):
        dlq = RabbitMQQueue(queue.address, f"{queue.name}.dlq", queue.server)
    elif isinstance(queue, RedisStreamQueue):
        dlq = RedisStreamQueue(queue.address, f"{queue.name}.dlq")
    else:
        assert isinstance(queue, RedisListQueue)
        dlq = RedisListQueue(queue.address, f"{queue.name}.dlq")
    ids = ids or [f"dead-{n:03d}" for n in range(count)]

    async def send() -> None:
        pool_queue = queue.producer()
        await pool_queue.connect()  # as a worker would have: a stream's consumer group, say
        await pool_queue.close()
        backend = dlq.producer()
        await backend.connect()
        try:
            for job_id in ids:
                envelope = new_envelope("probe", {"id": job_id}, now=_now(), job_id=job_id)
                failure = FailureRecord(reason="AttemptsExhausted", attempt=3, at=_now())
                await backend.enqueue(encode(with_failure(envelope, failure, next_attempt=False)))
        finally:
            await backend.close()

    asyncio.run(send())
    return ids


def test_a_replay_killed_half_way_then_run_again_loses_and_duplicates_nothing(
    crds: Cluster, namespace: str, queue: QueueUnderTest
) -> None:
    # Given 30 dead letters and no worker running
    _apply_pool(crds, namespace, queue)
    ids = _dead_letters(queue, 30)

    # When a slow replay is killed (SIGKILL) after it moved a few
    command, environment = _plugin_command(crds, namespace, "dlq", "replay", POOL, "--rate", "10")
    with subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True) as replay:
        assert replay.stdout is not None
        moved = 0
        for line in replay.stdout:
            moved += line.startswith("replayed ")
            if moved == 5:
                replay.send_signal(signal.SIGKILL)
                break
        replay.wait(timeout=30)
    assert replay.returncode == -signal.SIGKILL
    in_queue = _ids(queue, queue.name)
    assert 5 <= len(in_queue) < 30, in_queue

    # When it is run again
    again = _plugin(crds, namespace, "dlq", "replay", POOL)
    # Then every job is on the pool's queue exactly once, and none is left behind
    assert again.returncode == 0, again.stderr
    assert Counter(_ids(queue, queue.name)) == Counter(ids)
    assert _ids(queue, f"{queue.name}.dlq") == []


@pytest.mark.parametrize("queue", ["redis-list"], indirect=True)
def test_a_user_who_may_not_read_the_queue_secret_is_refused(
    crds: Cluster, namespace: str, queue: QueueUnderTest
) -> None:
    # Given a pool whose queue needs a password from a Secret, and a user who may read the pool and its
    # JobType but not that Secret
    secret = f"queue-auth-{uuid.uuid4().hex[:6]}"
    crds.kubectl("create", "secret", "generic", secret, "-n", namespace, "--from-literal=password=hunter2")
    _apply_pool(crds, namespace, queue, auth={"passwordSecretRef": {"name": secret, "key": "password"}})
    crds.kubectl(
        "create", "role", "pool-reader", "-n", namespace, "--verb=get,list",
        "--resource=workerpools.workerfleet.dev,jobtypes.workerfleet.dev",
    )  # fmt: skip
    crds.kubectl(
        "create", "rolebinding", "pool-reader", "-n", namespace, "--role=pool-reader", f"--user={REVIEWER}"
    )

    # When that user lists the dead letters
    refused = _plugin(crds, namespace, "--as", REVIEWER, "dlq", "ls", POOL)
    # Then the plugin refuses, naming the Secret and what access is missing
    assert refused.returncode == 4, refused
    assert (
        f"you may not read Secret {namespace}/{secret}, which holds the credentials of "
        f"WorkerPool {namespace}/{POOL}'s queue: ask for `get` on it"
    ) in refused.stderr


@pytest.mark.parametrize("queue", ["redis-list"], indirect=True)
def test_review_and_dead_letter_depths_show_in_status_get_wide_and_metrics(
    operator_process: OperatorProcess, namespace: str, queue: QueueUnderTest
) -> None:
    # Given two jobs waiting for review, one for five minutes, and one dead letter, of a pool created
    # after them (the operator reads a new pool at once, then every 30 s)
    cluster = operator_process.cluster
    waited = timedelta(minutes=5)
    for job_id, age, destination in (
        ("r1", waited, "review"),
        ("r2", timedelta(0), "review"),
        ("d1", waited, "dlq"),
    ):
        envelope = new_envelope("probe", {"id": job_id}, now=_now() - age, job_id=job_id)
        failure = FailureRecord(reason="NeedsReview", attempt=1, at=_now() - age)
        assert isinstance(queue, RedisListQueue)
        host, port = queue.address.split(":")
        with redis.Redis(host=host, port=int(port)) as client:
            client.lpush(
                f"{queue.name}.{destination}", encode(with_failure(envelope, failure, next_attempt=False))
            )
    _apply_pool(cluster, namespace, queue)

    # When the operator reads them
    def counted() -> dict[str, Any] | None:
        pool = cluster.get("workerpool", POOL, namespace=namespace) or {}
        counts = (pool.get("status") or {}).get("queue") or {}
        return counts if counts.get("reviewDepth") == 2 else None

    # Then status.queue says so, `kubectl get wp -o wide` shows it, and so do the operator's metrics
    counts = eventually(counted, what="status.queue.reviewDepth", timeout=30)
    assert counts["deadLetterDepth"] == 1
    wide = cluster.kubectl("get", "wp", POOL, "-n", namespace, "-o", "wide").stdout.splitlines()
    header, row = wide

    def cell(column: str) -> str:
        start = header.index(column)
        return row[start:].split()[0]

    assert cell("REVIEW") == "2", wide
    assert cell("DEAD LETTERS") == "1", wide
    with urllib.request.urlopen(
        f"http://127.0.0.1:{operator_process.metrics_port}/metrics", timeout=5
    ) as answer:
        metrics = answer.read().decode()
    labels = f'{{namespace="{namespace}",pool="{POOL}"}}'
    assert f"workerfleet_review_depth{labels} 2.0" in metrics
    assert f"workerfleet_dead_letter_depth{labels} 1.0" in metrics
    age = next(
        line
        for line in metrics.splitlines()
        if line.startswith(f"workerfleet_review_oldest_age_seconds{labels}")
    )
    assert waited.total_seconds() <= float(age.split()[1]) < waited.total_seconds() + 60, age


def test_purge_drops_only_the_matching_dead_letters_and_only_when_confirmed(
    crds: Cluster, namespace: str, queue: QueueUnderTest
) -> None:
    # Given three dead letters
    _apply_pool(crds, namespace, queue)
    ids = _dead_letters(queue, 3)
    dlq = f"{queue.name}.dlq"

    # When one is purged without --yes, with no terminal to ask on
    unconfirmed = _plugin(crds, namespace, "dlq", "purge", POOL, "--id", ids[1])
    # Then nothing is removed, and the command says how to confirm
    assert unconfirmed.returncode == 1, unconfirmed
    assert "purge cancelled, nothing removed (on no terminal, confirm with --yes)" in unconfirmed.stdout
    assert sorted(_ids(queue, dlq)) == ids

    # When it is purged with --yes
    purged = _plugin(crds, namespace, "dlq", "purge", POOL, "--id", ids[1], "--yes")
    # Then exactly that one is gone, for good
    assert purged.returncode == 0, purged.stderr
    assert sorted(_ids(queue, dlq)) == [ids[0], ids[2]]
    assert _ids(queue, queue.name) == []


def test_a_dead_letter_whose_key_completed_is_replayed_only_with_force(
    crds: Cluster, namespace: str, queue: QueueUnderTest, workers: Workers, probe_log: Path
) -> None:
    # Given a keyed job (the probe JobType's key is its id) that completed, and a dead letter of it
    _apply_pool(crds, namespace, queue)
    workers.start(queue)
    _enqueue(queue, [{"id": "k1"}])
    eventually(lambda: "k1" in _finished(probe_log), what="k1 to complete")
    _dead_letters(queue, 1, ids=["k1"])

    # When the dead letters are replayed
    replay = _plugin(crds, namespace, "dlq", "replay", POOL)
    assert replay.returncode == 0, replay.stderr
    if isinstance(queue, RabbitMQQueue):
        # Then, on RabbitMQ without an idempotencyStore, the command says it cannot tell, and replays
        assert "keeps no completed idempotency keys" in replay.stdout, replay.stdout
        assert "1 replayed" in replay.stdout, replay.stdout
        return
    # Then the completed key keeps it a dead letter, saying why
    assert "skipped k1: idempotency key probe:k1 completed already (--force replays it)" in replay.stdout
    assert _ids(queue, f"{queue.name}.dlq") == ["k1"]
    # And --force replays it; the worker, knowing the key, acknowledges it without running it again
    forced = _plugin(crds, namespace, "dlq", "replay", POOL, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "1 replayed" in forced.stdout, forced.stdout
    eventually(
        lambda: _ids(queue, f"{queue.name}.dlq") == [] and queue.held() == 0, what="the replay settled"
    )
    eventually(lambda: _ids(queue, queue.name) == [], what="the replayed job taken")
    time.sleep(1)
    starts = [line for line in probe_log.read_text().splitlines() if '"k1"' in line and '"start"' in line]
    assert len(starts) == 1, starts
