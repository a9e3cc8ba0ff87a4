"""`workerfleet enqueue` reads the WorkerPool and its JobType from a real cluster, as a user with a
kubeconfig would, and puts the job on the pool's real Redis list."""

from __future__ import annotations

import os
import subprocess
import uuid

import redis
import yaml

from devenv.cluster import Cluster
from devenv.servers import RedisServer
from e2e.worker.conftest import WORKERFLEET
from workerfleet.worker.envelope import decode

RESIZE_SCHEMA = {
    "type": "object",
    "required": ["url", "width"],
    "properties": {"url": {"type": "string"}, "width": {"type": "integer", "minimum": 1}},
}


def _enqueue(cluster: Cluster, namespace: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WORKERFLEET), "enqueue", "-n", namespace, "--pool", "thumbs", *arguments],
        env={"PATH": os.environ.get("PATH", ""), "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_enqueue_reads_pool_and_job_type_from_the_cluster(
    crds: Cluster, namespace: str, redis_server: RedisServer
) -> None:
    # Given a pool on a Redis list and its JobType with an input schema, in the cluster
    queue = f"jobs-{uuid.uuid4().hex[:8]}"
    documents = [
        {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "JobType",
            "metadata": {"name": "resize"},
            "spec": {"lane": "fast", "timeoutSeconds": 30, "input": {"schema": RESIZE_SCHEMA}},
        },
        {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": "thumbs"},
            "spec": {
                "jobTypes": ["resize"],
                "replicas": 0,
                "template": {"spec": {"containers": [{"name": "worker", "image": "thumbs:1"}]}},
                "queue": {"redis": {"address": redis_server.address, "list": queue}},
            },
        },
    ]
    crds.kubectl(
        "apply", "-n", namespace, "-f", "-", input_text="\n---\n".join(yaml.safe_dump(d) for d in documents)
    )

    # When a job breaks the schema, or names a JobType the cluster does not have
    invalid = _enqueue(crds, namespace, "--type", "resize", "--data", '{"url": "s3://a/b.png", "width": 0}')
    unknown = _enqueue(crds, namespace, "--type", "crop", "--data", "{}")
    # Then each fails and says why
    assert invalid.returncode == 2, invalid
    assert "at $.width: 0 is less than the minimum of 1" in invalid.stderr
    assert unknown.returncode == 2, unknown
    assert f"JobType {namespace}/crop not found" in unknown.stderr

    # When a good job is enqueued
    done = _enqueue(crds, namespace, "--type", "resize", "--data", '{"url": "s3://a/b.png", "width": 64}')
    # Then the pool's list holds exactly the envelope it printed
    assert done.returncode == 0, done.stderr
    host, port = redis_server.address.split(":")
    with redis.Redis(host=host, port=int(port)) as client:
        held = client.lrange(queue, 0, -1)
    assert [decode(body) for body in held] == [decode(done.stdout.strip().encode())]
    assert f"on Redis list {queue} at {redis_server.address}" in done.stderr
