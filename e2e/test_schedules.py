"""A scheduled JobType runs on time from the active operator replica, and across a failover (SIGKILL of
the active replica) loses no run and doubles none: the standby catches up the runs it missed."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import redis
import yaml

from devenv.cluster import Cluster
from devenv.servers import RedisServer
from e2e.test_peering import Replica, _wait_for_records, replicas  # noqa: F401  (the fixture)

EVERY_SECONDS = 10
ON_TIME_SECONDS = 3.0
"""A run enqueued by a live active replica lands within this of its time (the tick is 1 s)."""
WATCH_SECONDS = 90.0


def _scheduled(namespace: str, queue: str, address: str) -> str:
    documents = [
        {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "JobType",
            "metadata": {"name": "tick"},
            "spec": {
                "lane": "fast",
                "timeoutSeconds": 5,
                "schedule": {
                    "cron": f"* * * * * */{EVERY_SECONDS}",
                    "startingDeadlineSeconds": 60,
                    "payload": {"run": "$(scheduledTime)"},
                },
            },
        },
        {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": "ticks"},
            "spec": {
                "jobTypes": ["tick"],
                "replicas": 0,
                "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
                "queue": {"redis": {"address": address, "list": queue}},
            },
        },
    ]
    return "\n---\n".join(yaml.safe_dump(document) for document in documents)


def test_a_schedule_every_ten_seconds_survives_a_failover_with_no_run_lost_or_doubled(
    replicas: dict[str, Replica],  # noqa: F811
    operator_chart: Cluster,
    namespace: str,
    redis_server: RedisServer,
) -> None:
    cluster, a, b = operator_chart, replicas["a"], replicas["b"]
    queue = f"ticks-{namespace}"
    host, port = redis_server.address.split(":")
    client = redis.Redis(host=host, port=int(port))
    seen: dict[str, datetime] = {}
    runs: list[dict[str, object]] = []

    def look() -> None:
        for raw in reversed(client.lrange(queue, 0, -1)):
            job = json.loads(raw)
            runs.append(job) if job["id"] not in seen else None
            seen.setdefault(job["id"], datetime.now(UTC))

    try:
        # Given two replicas, a active, and a JobType scheduled every 10 s on a pool's Redis list
        a.process.start()
        b.process.start()
        _wait_for_records(cluster, {"e2e-a", "e2e-b"})
        cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", input_text=_scheduled(namespace, queue, redis_server.address)
        )

        # When a has enqueued a run, and is then killed
        deadline = time.monotonic() + WATCH_SECONDS
        while not seen and time.monotonic() < deadline:
            look()
            time.sleep(0.2)
        assert seen, "no run within the watch"
        a.process.kill()
        killed_at = datetime.now(UTC)

        # Then b takes over and, by the second run after that, has caught up and runs on time
        while time.monotonic() < deadline:
            look()
            scheduled = sorted(
                datetime.fromisoformat(str(job["enqueuedAt"]).replace("Z", "+00:00")) for job in runs
            )
            if scheduled and scheduled[-1] > killed_at + timedelta(seconds=30):
                break
            time.sleep(0.2)
    finally:
        client.close()

    times = [datetime.fromisoformat(str(job["enqueuedAt"]).replace("Z", "+00:00")) for job in runs]
    assert len(times) == len(set(times)), f"a run was enqueued twice: {sorted(seen)}"
    steps = {
        (later - earlier).total_seconds()
        for earlier, later in zip(sorted(times), sorted(times)[1:], strict=False)
    }
    assert steps == {float(EVERY_SECONDS)}, f"a run was lost: {sorted(seen)}"
    assert times[-1] > killed_at + timedelta(seconds=30), f"runs stopped after the failover: {sorted(seen)}"
    caught_up = [at for at in times if killed_at < at < killed_at + timedelta(seconds=10)]
    assert caught_up, "no run fell in the failover: the test proves nothing"
    late = [
        (job["id"], (seen[str(job["id"])] - at).total_seconds())
        for job, at in zip(runs, times, strict=True)
        if at > killed_at + timedelta(seconds=25)
    ]
    assert late, "no run after the takeover"
    assert all(delay < ON_TIME_SECONDS for _, delay in late), late
    assert all(job["payload"] == {"run": job["enqueuedAt"]} for job in runs)
