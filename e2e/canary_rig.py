"""A pool under canary test: its queue, a steady producer, real worker processes per revision and the
Prometheus that scrapes them; shared by the canary and rollout-fault tests (fixture `rig` in conftest).

Pods are simulated (kwok runs nothing), so a test runs worker processes on this host with the revision
the operator computed for each track, consuming the pool's real Redis list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devenv.cluster import Cluster, _binary
from devenv.producer import SteadyProducer
from devenv.prometheus import PrometheusServer
from devenv.servers import RedisServer, free_port
from devenv.waiting import eventually

WORKERFLEET = Path(sys.executable).parent / "workerfleet"
JOB_TYPE = "demo"
TOTAL_REPLICAS = 10
EXIT_TIMEOUT_SECONDS = 20.0


def _job_type_spec() -> dict[str, Any]:
    return {
        "lane": "fast",
        "timeoutSeconds": 5,
        "retry": {"maxAttempts": 2, "backoff": {"initialSeconds": 0.1, "maxSeconds": 0.2, "multiplier": 2}},
    }


def demo_job_type() -> dict[str, Any]:
    """The JobType the rig's workers serve: short timeouts, one quick retry."""
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": JOB_TYPE},
        "spec": _job_type_spec(),
    }


@dataclass
class Rig:
    """One pool under canary test: its queue, producer, worker processes and Prometheus targets."""

    cluster: Cluster
    namespace: str
    name: str
    redis_server: RedisServer
    prometheus: PrometheusServer
    directory: Path
    queue: str = field(default_factory=lambda: f"jobs-{uuid.uuid4().hex[:8]}")
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    launches: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)
    producer: SteadyProducer | None = None

    def pool(self, image: str, canary: dict[str, Any], **pod_spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": self.name},
            "spec": {
                "jobTypes": [JOB_TYPE],
                "replicas": TOTAL_REPLICAS,
                "template": {"spec": {"containers": [{"name": "worker", "image": image}], **pod_spec}},
                "queue": {"redis": {"address": self.redis_server.address, "list": self.queue}},
                "rollout": {"canary": canary},
            },
        }

    def create(self, canary: dict[str, Any]) -> str:
        """The pool at image v1, Ready; returns its stable revision."""
        self.cluster.apply(demo_job_type(), self.pool("worker:1", canary), namespace=self.namespace)
        status = eventually(
            lambda: (self.status().get("rollout") or {}).get("phase") == "Healthy" and self.status(),
            what="the pool to be Healthy",
            timeout=60,
        )
        return str(status["stableRevision"])

    def change_template(self, canary: dict[str, Any], **pod_spec: Any) -> str:
        """Image v2: a new revision; returns the canary revision the operator computed."""
        self.cluster.apply(self.pool("worker:2", canary, **pod_spec), namespace=self.namespace)
        status = eventually(
            lambda: self.status().get("canaryRevision") and self.status(),
            what="a canary revision",
            timeout=30,
        )
        return str(status["canaryRevision"])

    def status(self) -> dict[str, Any]:
        body = self.cluster.get(f"workerpool/{self.name}", namespace=self.namespace) or {}
        return dict(body.get("status") or {})

    def rollout(self) -> dict[str, Any]:
        return dict(self.status().get("rollout") or {})

    def deployment_replicas(self, name: str) -> int | None:
        body = self.cluster.get(f"deployment/{name}", namespace=self.namespace)
        return None if body is None else int(body["spec"]["replicas"])

    def events(self) -> list[dict[str, Any]]:
        listing = self.cluster.get(
            "events", f"--field-selector=involvedObject.name={self.name}", namespace=self.namespace
        )
        items = (listing or {}).get("items") or []
        # eventTime has microseconds; firstTimestamp only seconds, too coarse for the order
        return sorted(
            items, key=lambda event: event.get("eventTime") or event["metadata"]["creationTimestamp"]
        )

    def reasons(self) -> list[str]:
        return [event["reason"] for event in self.events()]

    def produce(self, per_second: float) -> None:
        self.producer = SteadyProducer(self.redis_server.port, self.queue, JOB_TYPE, per_second)
        self.producer.start()

    def start_worker(
        self, revision: str, failure_rate: float, handlers: str = "workerfleet.worker.demo"
    ) -> subprocess.Popen[bytes]:
        index = len(self.workers)
        policies = self.directory / "policies.json"
        policies.write_text(json.dumps({"jobTypes": {JOB_TYPE: _job_type_spec()}}))
        port = free_port()
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join(sys.path),
            "WORKERFLEET_POOL": self.name,
            "WORKERFLEET_REVISION": revision,
            "WORKERFLEET_QUEUE": json.dumps(
                {"redis": {"address": self.redis_server.address, "list": self.queue}}
            ),
            "WORKERFLEET_POLICIES": str(policies),
            "WORKERFLEET_WORKER_ID": f"{revision}-{index}",
            "WORKERFLEET_METRICS_ADDRESS": "127.0.0.1",
            "WORKERFLEET_METRICS_PORT": str(port),
            "WORKERFLEET_CONCURRENCY": "4",
            "WORKERFLEET_DEMO_JOB_TYPES": JOB_TYPE,
            "WORKERFLEET_DEMO_FAILURE_RATE": str(failure_rate),
            "WORKERFLEET_DEMO_DURATION_SECONDS": "0.005",
        }
        self.launches.append(([str(WORKERFLEET), "worker", "--handlers", handlers], environment))
        self.workers.append(self._launch(index))
        self.ports.append(port)
        self.prometheus.set_targets([f"127.0.0.1:{port}" for port in self.ports])
        return self.workers[-1]

    def _launch(self, index: int) -> subprocess.Popen[bytes]:
        command, environment = self.launches[index]
        with (self.directory / f"worker-{index}.log").open("ab") as log:
            return subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=log)

    def restart_worker(self, worker: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """SIGKILL a worker and start it again on the same metrics port, as a kubelet restarts an
        OOM-killed container in its pod (same scrape target)."""
        index = self.workers.index(worker)
        worker.kill()
        worker.wait(timeout=EXIT_TIMEOUT_SECONDS)
        self.workers[index] = self._launch(index)
        return self.workers[index]

    def jobs(self, revision: str, window_seconds: int) -> tuple[float, float]:
        """(attempts, failed attempts) of one revision over the window, as Prometheus has them."""
        selector = f'pool="{self.name}",revision="{revision}"'
        total = self.prometheus.query(
            f"sum(increase(workerfleet_jobs_total{{{selector}}}[{window_seconds}s]))"
        )
        errors = self.prometheus.query(
            f'sum(increase(workerfleet_jobs_total{{{selector},outcome=~"retried|dead_lettered|failed"}}'
            f"[{window_seconds}s]))"
        )
        return total or 0.0, errors or 0.0

    def stop(self) -> None:
        if self.producer is not None:
            self.producer.stop()
        for process in self.workers:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=EXIT_TIMEOUT_SECONDS)
        self.prometheus.set_targets([])


def analysis(prometheus: PrometheusServer, **overrides: Any) -> dict[str, Any]:
    """Analysis settings; an override of None leaves that field out."""
    settings = {
        "intervalSeconds": 5,
        "scrapeIntervalSeconds": 1,  # the test Prometheus scrapes every second
        "maxErrorRate": 0.1,
        "minSamples": 100,
        "prometheus": {"address": prometheus.address},
        **overrides,
    }
    return {key: value for key, value in settings.items() if value is not None}


def kubectl_plugin(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl workerfleet ...`, found by kubectl on PATH like any plugin."""
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    return subprocess.run(
        [str(_binary("kubectl")), "workerfleet", *args],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


class DeploymentWatch:
    """Every version of a namespace's Deployments, as a watch delivers them, with the ready workers
    of all of them together after each one."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self._process = subprocess.Popen(
            [
                str(_binary("kubectl")),
                f"--kubeconfig={cluster.kubeconfig}",
                "get",
                "deployments",
                "-n",
                namespace,
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.ready_after_each: list[tuple[float, str, str, int]] = []
        """(monotonic time, event type, Deployment, ready workers of all Deployments then)."""
        self._live: dict[str, int] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        decoder, buffer = json.JSONDecoder(), ""
        for line in self._process.stdout:
            buffer += line
            try:
                event, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                continue
            buffer = buffer.lstrip()[end:]
            body = event["object"]
            name = body["metadata"]["name"]
            if event["type"] == "DELETED":
                self._live.pop(name, None)
            else:
                self._live[name] = int((body.get("status") or {}).get("readyReplicas") or 0)
            self.ready_after_each.append((time.monotonic(), event["type"], name, sum(self._live.values())))

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=EXIT_TIMEOUT_SECONDS)
        self._reader.join(timeout=EXIT_TIMEOUT_SECONDS)


def ready_workers(rig: Rig, name: str) -> int:
    body = rig.cluster.get(f"deployment/{name}", namespace=rig.namespace) or {}
    return int((body.get("status") or {}).get("readyReplicas") or 0)
