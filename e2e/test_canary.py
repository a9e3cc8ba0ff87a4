"""Canary rollouts against the real cluster, with real Redis, a real Prometheus and real worker processes.

Pods are simulated (kwok runs nothing), so each test runs worker processes on this host with the
revision the operator computed for each track, consuming the pool's real Redis list; Prometheus
scrapes them every second and the operator's analysis reads it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devenv.cluster import Cluster, _binary
from devenv.operator import OperatorProcess
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
        job_type = {
            "apiVersion": "workerfleet.dev/v1alpha1",
            "kind": "JobType",
            "metadata": {"name": JOB_TYPE},
            "spec": _job_type_spec(),
        }
        self.cluster.apply(job_type, self.pool("worker:1", canary), namespace=self.namespace)
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


@pytest.fixture
def rig(
    operator: Cluster,
    namespace: str,
    redis_server: RedisServer,
    prometheus_server: PrometheusServer,
    tmp_path: Path,
) -> Iterator[Rig]:
    started = Rig(operator, namespace, "thumbs", redis_server, prometheus_server, tmp_path)
    try:
        yield started
    finally:
        started.stop()


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


def test_a_good_canary_walks_every_step_and_becomes_stable(rig: Rig) -> None:
    # Given a pool with three canary steps and analysis, and stable workers that never fail
    canary = {
        "steps": [
            {"weight": 10, "pauseSeconds": 5},
            {"weight": 50, "pauseSeconds": 5},
            {"weight": 100, "pauseSeconds": 5},
        ],
        "analysis": analysis(rig.prometheus),
    }
    stable = rig.create(canary)
    rig.start_worker(stable, failure_rate=0.0)
    rig.produce(per_second=150)

    # When the template changes and the new revision's workers fail no job either
    revision = rig.change_template(canary)
    rig.start_worker(revision, failure_rate=0.0)

    # Then the canary runs beside the stable Deployment with its share of the replicas
    eventually(
        lambda: rig.deployment_replicas("thumbs-canary") == 1, what="1 canary replica at 10%", timeout=30
    )
    eventually(lambda: rig.deployment_replicas("thumbs") == 9, what="stable at 9 once the canary is ready")

    # And the rollout walks every step and promotes the revision to stable
    eventually(
        lambda: rig.status().get("stableRevision") == revision and rig.rollout().get("phase") == "Healthy",
        what="the canary promoted",
        timeout=120,
    )
    eventually(lambda: rig.deployment_replicas("thumbs-canary") is None, what="the canary Deployment gone")
    assert rig.deployment_replicas("thumbs") == TOTAL_REPLICAS
    stable_deployment = rig.cluster.get("deployment/thumbs", namespace=rig.namespace)
    assert stable_deployment["spec"]["template"]["metadata"]["labels"]["workerfleet.dev/revision"] == revision

    # And the Events tell the story in order
    reasons = [
        reason
        for reason in rig.reasons()
        if reason in ("RolloutStarted", "StepCompleted", "RolloutPromoted", "RolledBack")
    ]
    assert reasons == ["RolloutStarted", "StepCompleted", "StepCompleted", "StepCompleted", "RolloutPromoted"]
    assert "AnalysisPassed" in rig.reasons()


def test_a_bad_canary_is_rolled_back_within_one_analysis_interval(rig: Rig) -> None:
    # Given a pool whose stable workers never fail
    interval = 5
    canary = {
        "steps": [{"weight": 20, "pauseSeconds": 120}, {"weight": 100, "pauseSeconds": 120}],
        "analysis": analysis(rig.prometheus, intervalSeconds=interval, maxIncreaseOverStable=0.05),
    }
    stable = rig.create(canary)
    rig.start_worker(stable, failure_rate=0.0)
    rig.produce(per_second=150)

    # When the new revision's workers fail 30% of their jobs
    revision = rig.change_template(canary)
    eventually(
        lambda: rig.deployment_replicas("thumbs-canary") == 2, what="2 canary replicas at 20%", timeout=30
    )
    rig.start_worker(revision, failure_rate=0.3)

    # Then, once Prometheus shows the canary above the threshold, it is at zero within one interval
    # (the analysis counts every job since the step started, so the probe reads the same window)
    step_started = datetime.fromisoformat(
        eventually(lambda: rig.rollout().get("stepStartedAt"), what="the step's clock started")
    )
    crossed = zero = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and zero is None:
        window = max(interval, math.ceil((datetime.now(UTC) - step_started).total_seconds()))
        total, errors = rig.jobs(revision, window)
        if crossed is None and total >= 100 and errors / total > 0.1:
            crossed = time.monotonic()
        if rig.deployment_replicas("thumbs-canary") == 0:
            zero = time.monotonic()
        time.sleep(0.2)
    assert zero is not None, "the canary was not scaled to zero"
    assert crossed is not None, (
        "Prometheus never showed the canary's error rate above the threshold",
        [event["message"] for event in rig.events() if event["type"] == "Warning"],
    )
    latency = max(zero - crossed, 0.0)
    record = {
        "rollback_latency_seconds": round(latency, 2),
        "interval_seconds": interval,
        "ratio": latency / interval,
    }
    (rig.cluster.layout.logs / "rollback-latency.json").write_text(json.dumps(record))
    assert latency <= interval + 2, record

    # And the pool is Degraded on the stable revision, with a Warning Event that has the numbers
    assert rig.deployment_replicas("thumbs") == TOTAL_REPLICAS
    status = eventually(
        lambda: rig.rollout().get("phase") == "Degraded" and rig.status(), what="status Degraded", timeout=10
    )
    assert (status["rollout"]["phase"], status["stableRevision"]) == ("Degraded", stable)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolloutFailed")
    rolled_back = eventually(
        lambda: [e for e in rig.events() if e["reason"] == "RolledBack"],
        what="a RolledBack Event",
        timeout=10,
    )
    assert rolled_back[0]["type"] == "Warning"
    assert "maxErrorRate 10.0%" in rolled_back[0]["message"]
    assert "canary error rate" in rolled_back[0]["message"]


def test_a_noisy_canary_within_the_increase_over_a_noisy_stable_is_promoted(rig: Rig) -> None:
    # Given stable workers that fail 5% of their jobs, and a threshold relative to stable only (8 points:
    # over a few hundred jobs each, the two measured rates wander by a couple of points either way)
    canary = {
        "steps": [{"weight": 50, "pauseSeconds": 10}],
        "analysis": analysis(rig.prometheus, maxErrorRate=None, maxIncreaseOverStable=0.08),
    }
    stable = rig.create(canary)
    rig.start_worker(stable, failure_rate=0.05)
    rig.produce(per_second=150)

    # When the canary fails 6%, above the stable revision but within 8 points of it
    revision = rig.change_template(canary)
    rig.start_worker(revision, failure_rate=0.06)

    # Then it is promoted, never rolled back
    eventually(
        lambda: rig.status().get("stableRevision") == revision or rig.rollout().get("phase") == "Degraded",
        what="the rollout to end",
        timeout=90,
    )
    assert rig.status()["stableRevision"] == revision, rig.rollout()
    assert "RolledBack" not in rig.reasons()
    assert "AnalysisFailed" not in rig.reasons()


def test_too_few_samples_hold_the_step_without_rolling_back(rig: Rig) -> None:
    # Given a trickle of jobs, far fewer per interval than minSamples
    interval = 3
    canary = {
        "steps": [{"weight": 10, "pauseSeconds": 2}, {"weight": 100, "pauseSeconds": 2}],
        "analysis": analysis(rig.prometheus, intervalSeconds=interval, minSamples=100),
    }
    stable = rig.create(canary)
    rig.start_worker(stable, failure_rate=0.0)
    rig.produce(per_second=4)

    # When the canary fails half of the few jobs it gets
    revision = rig.change_template(canary)
    rig.start_worker(revision, failure_rate=0.5)

    # Then every analysis is inconclusive: the step holds (Paused), nothing is rolled back
    eventually(
        lambda: len(rig.rollout().get("history") or []) >= 4,
        what="four analyses",
        timeout=60,
    )
    rollout = rig.rollout()
    assert (rollout["phase"], rollout["step"], rollout["failedAnalyses"]) == ("Paused", 1, 0), rollout
    assert {entry["verdict"] for entry in rollout["history"]} == {"Inconclusive"}
    assert "minSamples" in rollout["message"]
    assert rig.deployment_replicas("thumbs-canary") == 1
    assert "RolledBack" not in rig.reasons()
    assert "AnalysisInconclusive" in rig.reasons()


def _plugin(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
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


def test_the_kubectl_plugin_promotes_aborts_and_retries_and_scaling_splits_the_total(rig: Rig) -> None:
    # Given a canary held at a step without pause (no analysis: people decide)
    cluster, ns = rig.cluster, rig.namespace
    canary = {"steps": [{"weight": 30}, {"weight": 60}]}
    stable = rig.create(canary)
    revision = rig.change_template(canary)
    eventually(lambda: rig.rollout().get("phase") == "Paused", what="step 1 waiting for promote")
    shown = _plugin(cluster, "-n", ns, "status", "thumbs")
    assert shown.returncode == 0, shown.stderr
    assert "step    1 of 2" in shown.stdout
    assert f"canary  {revision}" in shown.stdout
    assert rig.deployment_replicas("thumbs-canary") == 3

    # When the total changes (as the HPA does through the scale subresource), it is split by the same weight
    cluster.kubectl("scale", "workerpool/thumbs", "-n", ns, "--replicas=20")
    eventually(lambda: rig.deployment_replicas("thumbs-canary") == 6, what="6 of 20 replicas at 30%")
    eventually(
        lambda: rig.deployment_replicas("thumbs") == 14, what="stable at 14 once 6 canary workers are ready"
    )
    cluster.kubectl("scale", "workerpool/thumbs", "-n", ns, f"--replicas={TOTAL_REPLICAS}")
    eventually(lambda: rig.deployment_replicas("thumbs-canary") == 3, what="3 of 10 replicas at 30%")

    # When promoted, the next step runs
    assert _plugin(cluster, "-n", ns, "promote", "thumbs").returncode == 0
    # (children are applied before status is written, so wait for both)
    eventually(
        lambda: rig.deployment_replicas("thumbs-canary") == 6 and rig.rollout().get("step") == 2,
        what="step 2 with 6 canary replicas at 60%",
    )

    # When aborted, the canary is at zero, the pool Degraded, and status exits non-zero
    assert _plugin(cluster, "-n", ns, "abort", "thumbs").returncode == 0
    eventually(
        lambda: rig.deployment_replicas("thumbs-canary") == 0 and rig.rollout().get("phase") == "Degraded",
        what="the canary at zero, Degraded",
    )
    assert rig.deployment_replicas("thumbs") == TOTAL_REPLICAS
    degraded = _plugin(cluster, "-n", ns, "status", "thumbs")
    assert degraded.returncode == 1
    assert "Degraded" in degraded.stdout

    # When retried, the rollout starts again from step 1
    assert _plugin(cluster, "-n", ns, "retry", "thumbs").returncode == 0
    eventually(
        lambda: (
            rig.deployment_replicas("thumbs-canary") == 3
            and (rig.rollout().get("phase"), rig.rollout().get("step")) == ("Paused", 1)
        ),
        what="step 1 again with 3 canary replicas, waiting for promote",
    )

    # When promoted in full, the canary becomes stable at once
    assert _plugin(cluster, "-n", ns, "promote", "thumbs", "--full").returncode == 0
    eventually(lambda: rig.status().get("stableRevision") == revision, what="the canary promoted in full")
    eventually(lambda: rig.deployment_replicas("thumbs-canary") is None, what="the canary Deployment gone")
    assert rig.deployment_replicas("thumbs") == TOTAL_REPLICAS
    assert stable != revision
    reasons = rig.reasons()
    for reason in ("RolloutStarted", "StepCompleted", "RolloutAborted", "RolloutPromoted"):
        assert reason in reasons, reasons

    # And `kubectl get wp` shows the phase
    table = cluster.kubectl("get", "wp", "thumbs", "-n", ns).stdout
    assert "Healthy" in table, table


def test_an_operator_killed_mid_step_continues_where_it_was(
    rig: Rig, operator_process: OperatorProcess
) -> None:
    # Given a canary at step 1 of 2 (no analysis: time alone moves it)
    canary = {"steps": [{"weight": 20, "pauseSeconds": 12}, {"weight": 50, "pauseSeconds": 600}]}
    rig.create(canary)
    rig.change_template(canary)
    eventually(lambda: rig.deployment_replicas("thumbs-canary") == 2, what="2 canary replicas at 20%")
    started_at = eventually(
        lambda: rig.rollout().get("stepStartedAt"), what="the step's clock started, its canary ready"
    )

    # When the operator is killed mid-step and started again before the step has held long enough
    operator_process.kill()
    time.sleep(3)
    assert (rig.rollout()["step"], rig.deployment_replicas("thumbs-canary")) == (1, 2)
    operator_process.start()

    # Then it goes on from the same step, timed from when that step began, to the next one
    eventually(lambda: rig.rollout().get("step") == 2, what="step 2 after the restart", timeout=30)
    assert rig.rollout()["phase"] == "Progressing"
    assert rig.deployment_replicas("thumbs-canary") == 5
    eventually(lambda: rig.deployment_replicas("thumbs") == 5, what="stable at 5 once the canary is ready")
    # And nothing was started twice: one canary Deployment, one RolloutStarted
    listing = rig.cluster.get("deployments", "-l", "workerfleet.dev/pool=thumbs", namespace=rig.namespace)
    assert sorted(item["metadata"]["name"] for item in listing["items"]) == ["thumbs", "thumbs-canary"]
    assert rig.reasons().count("RolloutStarted") == 1
    step_completed = next(e for e in rig.events() if e["reason"] == "StepCompleted")
    assert "held 12s" in step_completed["message"]
    assert started_at < rig.rollout()["stepStartedAt"]


def test_a_canary_whose_workers_never_get_ready_is_rolled_back_at_the_progress_deadline(rig: Rig) -> None:
    # Given a pool with a 10 s progress deadline
    canary = {"steps": [{"weight": 20, "pauseSeconds": 5}], "progressDeadlineSeconds": 10}
    stable = rig.create(canary)

    # When the new revision's pods can be scheduled on no node
    revision = rig.change_template(canary, nodeSelector={"workerfleet.dev/no-such-node": "true"})

    # Then the step waits for its canary workers, its clock not running
    eventually(
        lambda: "waiting for 2 canary workers" in rig.rollout().get("message", ""),
        what="the step waiting for its canary",
        timeout=30,
    )
    waiting = rig.rollout()
    assert waiting["phase"] == "Progressing"
    assert waiting.get("stepStartedAt") is None
    assert waiting["waitingSince"]

    # And at the deadline the canary is rolled back, with a Warning that says why
    eventually(lambda: rig.rollout().get("phase") == "Degraded", what="the rollout failed", timeout=40)
    eventually(lambda: rig.deployment_replicas("thumbs-canary") == 0, what="the canary at zero", timeout=30)
    assert rig.deployment_replicas("thumbs") == TOTAL_REPLICAS
    assert rig.status()["stableRevision"] == stable
    [rolled_back] = [event for event in rig.events() if event["reason"] == "RolledBack"]
    assert rolled_back["type"] == "Warning"
    assert "0 of 2 canary workers ready after progressDeadlineSeconds 10" in rolled_back["message"]
    assert revision in rolled_back["message"]


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


def _ready(rig: Rig, name: str) -> int:
    body = rig.cluster.get(f"deployment/{name}", namespace=rig.namespace) or {}
    return int((body.get("status") or {}).get("readyReplicas") or 0)


def test_promoting_from_a_full_canary_keeps_every_worker_ready(rig: Rig) -> None:
    # Given a canary at 100%: all ten workers run the new revision, the stable Deployment none
    canary = {"steps": [{"weight": 100}]}
    rig.create(canary)
    revision = rig.change_template(canary)
    eventually(
        lambda: (
            rig.rollout().get("phase") == "Paused"
            and _ready(rig, "thumbs-canary") == TOTAL_REPLICAS
            and rig.deployment_replicas("thumbs") == 0
        ),
        what="ten ready canary workers and no stable one, waiting for promote",
    )

    # When it is promoted
    watch = DeploymentWatch(rig.cluster, rig.namespace)
    try:
        eventually(lambda: watch.ready_after_each, what="the watch's first listing", timeout=30)
        promoted_at = time.monotonic()
        assert _plugin(rig.cluster, "-n", rig.namespace, "promote", "thumbs").returncode == 0
        eventually(
            lambda: (
                rig.rollout().get("phase") == "Healthy" and rig.deployment_replicas("thumbs-canary") is None
            ),
            what="the promotion done, the canary Deployment gone",
        )
        eventually(
            lambda: any(kind == "DELETED" for _, kind, _, _ in watch.ready_after_each),
            what="the watch to see the canary go",
            timeout=10,
        )
    finally:
        watch.stop()

    # Then the stable Deployment runs the new revision with all ten workers
    assert rig.status()["stableRevision"] == revision
    assert _ready(rig, "thumbs") == TOTAL_REPLICAS
    # And at no moment were fewer than ten workers ready: the canary went only after stable was ready
    during = [entry for entry in watch.ready_after_each if entry[0] >= promoted_at]
    fewest = min(ready for _, _, _, ready in during)
    deleted_at = next(at for at, kind, _, _ in during if kind == "DELETED")
    print(
        f"promotion from 100%: canary gone {deleted_at - promoted_at:.1f}s after promote,"
        f" fewest ready {fewest}"
    )
    assert fewest >= TOTAL_REPLICAS, during
    assert rig.reasons().count("RolloutPromoted") == 1
