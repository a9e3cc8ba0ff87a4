"""`make demo`: workerfleet doing real work on the local cluster, from a burst of jobs to an idle pool.

    python -m devenv.demo [--linger SECONDS] [--real-node]

It brings up the local cluster, installs the chart (CRDs, RBAC, the operator's Deployment) and runs
the operator on this host under the chart's ServiceAccount token (pods are simulated, so the
operator's pod runs nothing). A real Redis holds the jobs and a real Prometheus scrapes the operator
and the workers, with the chart's alerts loaded. Worker pods are simulated too, so for every Ready
worker pod of the pool one `workerfleet worker` process runs on this host with that pod's
environment and the pool's policies: when the HPA scales the pool, the work really speeds up.

With `--real-node` (`make demo REAL_NODE=1`) the workers are real containers instead: the cluster
gets its real node (devenv.node), the chart runs the operator image there as a pod, and the pool's
demo-worker containers run beside it, reaching Redis and Prometheus through the node's forwarders;
Prometheus scrapes the pods at their addresses. The review step is left out there: the kubectl
plugin on this host cannot reach the queue at the address the pods use.

The scenario is a list of steps (`SCENARIO`); each takes the running `Demo` and prints as it goes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import redis
import yaml

from devenv import chart, images, node
from devenv.cluster import Cluster
from devenv.loopback import PodWorkers, on_loopback_node
from devenv.operator import METRICS_PORT, install_crds, operator_as_chart_identity
from devenv.producer import SteadyProducer
from devenv.prometheus import SCRAPE_INTERVAL_SECONDS, PrometheusServer
from devenv.servers import RedisServer, free_port
from workerfleet.api.worker_contract import ERROR_OUTCOMES, UNCOUNTED_OUTCOMES
from workerfleet.planners.breaker import BreakerReason
from workerfleet.planners.rollout import RolloutReason
from workerfleet.planners.scaling import ScalingReason
from workerfleet.report import Chart, Marker, Page, Panel, Series, render_html
from workerfleet.triage import TriageReason
from workerfleet.worker.envelope import encode, new_envelope

NAMESPACE = "workerfleet-demo"
POOL = "thumbs"
JOB_TYPE = "resize-image"
QUEUE = "jobs:resize-image"
WORKER = Path(sys.executable).parent / "workerfleet"
PLUGIN = Path(sys.executable).parent / "kubectl-workerfleet"
WORKER_STOP_SECONDS = 30.0
REPORT = Path("demo-report.html")
SCALED_UP = "ScaledUp"
"""The HPA's SuccessfulRescale Event to more replicas, as the report labels it."""
SCALED_DOWN = "ScaledDown"
HPA_RESCALE = "SuccessfulRescale"
MARKED_REASONS = (
    ScalingReason.ACTIVATED,
    ScalingReason.DEACTIVATED,
    RolloutReason.STARTED,
    RolloutReason.ANALYSIS_FAILED,
    RolloutReason.ROLLED_BACK,
    TriageReason.REVIEW_APPROVED,
    TriageReason.DEAD_LETTERS_REPLAYED,
    BreakerReason.TRIPPED,
    BreakerReason.PROBING,
    BreakerReason.CLOSED,
)
"""The pool's Events the report marks on its time axis, besides the HPA's rescales."""
ERROR_RATE_WINDOW = "10s"


@dataclass(frozen=True)
class Timing:
    """How big the burst is and how fast the pool may move; the smoke test shrinks it."""

    jobs: int = 600
    job_seconds: float = 0.5
    target_per_replica: int = 25
    max_replicas: int = 8
    cooldown_seconds: int = 20
    scale_timeout_seconds: float = 240.0
    show_every_seconds: float = 5.0
    linger_seconds: float = 0.0
    steady_replicas: int = 4
    steady_jobs_per_second: float = 5.0
    canary_weight: int = 25
    canary_step_seconds: int = 120
    bad_failure_rate: float = 0.5
    analysis_interval_seconds: int = 10
    analysis_min_samples: int = 10
    breaker_window_seconds: int = 10
    breaker_cool_down_seconds: int = 10


def job_type() -> dict[str, Any]:
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": JOB_TYPE},
        "spec": {
            "lane": "fast",
            "input": {"schema": {"type": "object", "required": ["image"]}},
            "timeoutSeconds": 10,
            "deadlineSeconds": 900,
            "retry": {"maxAttempts": 3, "backoff": {"initialSeconds": 1, "maxSeconds": 10, "multiplier": 2}},
            "deadLetter": {"queue": f"{QUEUE}.dlq"},
            "review": {"queue": f"{QUEUE}.review"},
            "idempotency": {"keyField": "image"},
        },
    }


ON_THE_REAL_NODE: dict[str, Any] = {
    "nodeSelector": {node.NODE_LABEL: "true"},
    "tolerations": [{"key": node.TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
}
BUILT_DEMO_WORKER = {
    "image": images.image_reference("demo-worker").removeprefix("docker.io/"),
    "imagePullPolicy": "Never",
}
"""The image `make images` built and imported into the real node's containerd (no registry)."""
STABLE_VERSION = "0.1.0"
BAD_VERSION = "0.2.0"
STABLE_FAILURE_RATE = 0.02
MAX_CANARY_ERROR_RATE = 0.1
MAX_INCREASE_OVER_STABLE = 0.05


REAL_NODE_TIMING = Timing(max_replicas=5, steady_replicas=3)
"""Real containers on a machine of two shared cores: fewer at once than simulated pods."""


def worker_pool(
    redis_address: str,
    prometheus_address: str,
    timing: Timing,
    *,
    min_replicas: int = 0,
    version: str = STABLE_VERSION,
    failure_rate: float = STABLE_FAILURE_RATE,
    real_node: bool = False,
) -> dict[str, Any]:
    """A pool that scales on queue depth, down to zero when idle; its workers run the demo handler.

    A new template rolls out as a canary on a quarter of the workers, judged every interval by the
    error rate Prometheus scraped from them against the stable workers on the same queue. On the
    real node the pods run the demo-worker image built here (one tag: the failure rate alone makes
    the new revision).
    """
    environment = {
        "WORKERFLEET_HANDLERS": "workerfleet.worker.demo",
        "WORKERFLEET_DEMO_JOB_TYPES": JOB_TYPE,
        "WORKERFLEET_DEMO_DURATION_SECONDS": str(timing.job_seconds),
        "WORKERFLEET_DEMO_FAILURE_RATE": str(failure_rate),
    }
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": POOL},
        "spec": {
            "jobTypes": [JOB_TYPE],
            # No replicas: the autoscaler owns them, and every `kubectl apply` would reset them.
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "worker",
                            "image": f"workerfleet/demo-worker:{version}",
                            "args": ["worker"],
                            "env": [{"name": name, "value": value} for name, value in environment.items()],
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                            **(BUILT_DEMO_WORKER if real_node else {}),
                        }
                    ],
                    **(ON_THE_REAL_NODE if real_node else {}),
                }
            },
            "queue": {"redis": {"address": redis_address, "list": QUEUE}},
            "autoscaling": {
                "minReplicas": min_replicas,
                "maxReplicas": timing.max_replicas,
                "targetDepthPerReplica": timing.target_per_replica,
                "pollingIntervalSeconds": 2,
                "cooldownSeconds": timing.cooldown_seconds,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}},
            },
            "rollout": {
                "canary": {
                    "steps": [
                        {"weight": timing.canary_weight, "pauseSeconds": timing.canary_step_seconds},
                        {"weight": 100, "pauseSeconds": timing.canary_step_seconds},
                    ],
                    "analysis": {
                        "intervalSeconds": timing.analysis_interval_seconds,
                        "scrapeIntervalSeconds": SCRAPE_INTERVAL_SECONDS,
                        "minSamples": timing.analysis_min_samples,
                        "maxErrorRate": MAX_CANARY_ERROR_RATE,
                        "maxIncreaseOverStable": MAX_INCREASE_OVER_STABLE,
                        "prometheus": {"address": prometheus_address},
                    },
                }
            },
        },
    }


@dataclass(frozen=True)
class HostWorker:
    """The worker process standing in for one pod, and the revision that pod runs."""

    process: subprocess.Popen[bytes]
    metrics_port: int
    revision: str


@dataclass
class HostWorkers:
    """One `workerfleet worker` process on this host per Ready worker pod of the pool."""

    directory: Path
    prometheus: PrometheusServer | None
    processes: dict[str, HostWorker] = field(default_factory=dict)

    def follow(self, pods: list[dict[str, Any]], policies: str) -> None:
        ready = {pod["metadata"]["name"]: pod for pod in pods if _pod_ready(pod)}
        for name in sorted(set(self.processes) - set(ready)):
            self._stop(name)
        for name in sorted(set(ready) - set(self.processes)):
            self._start(name, ready[name], policies)
        if self.prometheus is not None:
            # The target labels Kubernetes discovery gives: the pod's namespace and name
            labels = {f"127.0.0.1:{METRICS_PORT}": {"namespace": chart.RELEASE_NAMESPACE, "pod": "operator"}}
            for name, worker in self.processes.items():
                labels[f"127.0.0.1:{worker.metrics_port}"] = {"namespace": NAMESPACE, "pod": name}
            self.prometheus.set_targets(list(labels), labels)

    def revisions(self) -> dict[str, str]:
        """The revision each running worker process was started with, by pod name."""
        return {name: worker.revision for name, worker in self.processes.items()}

    def _start(self, pod_name: str, pod: dict[str, Any], policies: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        policies_file = self.directory / "policies.json"
        policies_file.write_text(policies)
        [container] = pod["spec"]["containers"]
        metrics_port = free_port()
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **{entry["name"]: entry["value"] for entry in container.get("env", []) if "value" in entry},
            "WORKERFLEET_POLICIES": str(policies_file),
            "WORKERFLEET_WORKER_ID": pod_name,
            "WORKERFLEET_METRICS_ADDRESS": "127.0.0.1",
            "WORKERFLEET_METRICS_PORT": str(metrics_port),
        }
        with (self.directory / f"{pod_name}.log").open("ab") as log:
            process = subprocess.Popen(
                [str(WORKER), *container.get("args", ["worker"])],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes[pod_name] = HostWorker(process, metrics_port, environment["WORKERFLEET_REVISION"])

    def _stop(self, pod_name: str) -> None:
        """SIGTERM, as the kubelet would: the worker finishes the job it holds, then exits."""
        process = self.processes.pop(pod_name).process
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self._stop(name)


@dataclass
class ContainerWorkers:
    """The pool's Ready worker pods on the real node: their containers run the workers, so following
    them is telling Prometheus where to scrape (pod addresses, routed from the host to the node)."""

    prometheus: PrometheusServer | None
    operator_target: str | None = None
    """The operator pod's metrics address, scraped beside the workers."""
    processes: dict[str, str] = field(default_factory=dict)
    """Each Ready worker pod's revision, by pod name (named as HostWorkers' so the steps read both)."""

    def follow(self, pods: list[dict[str, Any]], policies: str) -> None:
        """`policies` are the pods' own, mounted from the pool's ConfigMap."""
        ready = [pod for pod in pods if _pod_ready(pod) and pod["status"].get("podIP")]
        self.processes = {
            pod["metadata"]["name"]: pod["metadata"]["labels"].get("workerfleet.dev/revision", "")
            for pod in ready
        }
        if self.prometheus is None:
            return
        labels = {}
        if self.operator_target is not None:
            labels[self.operator_target] = {"namespace": chart.RELEASE_NAMESPACE, "pod": "operator"}
        for pod in ready:
            [port] = [
                p["containerPort"]
                for p in pod["spec"]["containers"][0].get("ports", [])
                if p["name"] == "metrics"
            ]
            labels[f"{pod['status']['podIP']}:{port}"] = {
                "namespace": NAMESPACE,
                "pod": pod["metadata"]["name"],
            }
        self.prometheus.set_targets(list(labels), labels)

    def revisions(self) -> dict[str, str]:
        return dict(self.processes)

    def stop_all(self) -> None:
        """The pods are the cluster's to stop; only the scrape targets go."""
        self.processes = {}
        if self.prometheus is not None:
            self.prometheus.set_targets([])


def _event_time(event: dict[str, Any]) -> datetime:
    """When an Event last happened (core/v1 Events carry one of these, from whichever client)."""
    stamp = event.get("lastTimestamp") or event.get("eventTime") or event["metadata"]["creationTimestamp"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).replace(microsecond=0)


@dataclass(frozen=True)
class PoolSample:
    """The pool as the demo saw it at one moment: seconds since the demo started."""

    at: float
    depth: int
    desired: int
    ready: int


@dataclass(frozen=True)
class SeenEvent:
    at: float
    type: str
    reason: str
    message: str


def _pod_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


class Demo:
    """The running parts of the demo and what it has shown so far."""

    def __init__(
        self,
        cluster: Cluster,
        directory: Path,
        timing: Timing,
        out: TextIO = sys.stdout,
        *,
        real_node: bool = False,
    ) -> None:
        self.cluster = cluster
        self.directory = directory
        self.timing = timing
        self.out = out
        self.real_node = real_node
        self.stack = ExitStack()
        self.redis: RedisServer | None = None
        self.prometheus: PrometheusServer | None = None
        self.workers: HostWorkers | ContainerWorkers = (
            ContainerWorkers(None) if real_node else HostWorkers(directory / "workers", None)
        )
        self.addresses: tuple[str, str] | None = None
        """Redis's and Prometheus's addresses as the pool names them (the workers' and the operator's)."""
        self._events_seen: set[str] = set()
        self._last_table = ""
        self._started = datetime.now(UTC).replace(microsecond=0)
        self.samples: list[PoolSample] = []
        self.events: list[SeenEvent] = []
        self.report: Path | None = None
        """Where `write_report` writes the picture of the run."""
        self.notes: list[str] = []
        """What the steps measured, for the report's closing notes."""

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def step(self, title: str) -> None:
        self.say(f"\n=== {title}")

    def kubectl(self, *args: str) -> str:
        return self.cluster.kubectl(*args).stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-n", NAMESPACE, "-o", "json"))

    def show_pools(self) -> None:
        """`kubectl get wp` and the pool's Events not shown yet (none from an earlier run of the demo)."""
        table = self.kubectl("get", "wp", "-n", NAMESPACE)
        depth = self.queue_depth()
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self.sample(depth)
        if table != self._last_table:
            workers = len(self.workers.processes)
            self.say(f"--- {stamp}  kubectl get wp   (Redis {QUEUE}: {depth} waiting, {workers} workers)")
            self.say(table.rstrip())
            self._last_table = table
        for event in self.get("events", "--field-selector", f"involvedObject.name={POOL}")["items"]:
            uid = event["metadata"]["uid"]
            if uid not in self._events_seen and _event_time(event) >= self._started:
                self._events_seen.add(uid)
                self.say(f"    event {event['type']:<7} {event['reason']:<22} {event['message']}")
                at = (_event_time(event) - self._started).total_seconds()
                self.events.append(SeenEvent(at, event["type"], event["reason"], event["message"]))

    def since_start(self) -> float:
        return time.time() - self._started.timestamp()

    def sample(self, depth: int) -> None:
        """Record the queue depth and the pool's desired and ready replicas, for the report."""
        found = self.kubectl("get", "workerpool", POOL, "-n", NAMESPACE, "-o", "json", "--ignore-not-found")
        if not found:
            return
        pool = json.loads(found)
        desired = int(pool["spec"].get("replicas", 0))
        ready = int((pool.get("status") or {}).get("readyReplicas", 0))
        self.samples.append(PoolSample(self.since_start(), depth, desired, ready))

    def queue_depth(self) -> int:
        assert self.redis is not None
        client = redis.Redis(host="127.0.0.1", port=self.redis.port)
        try:
            return int(client.llen(QUEUE))
        finally:
            client.close()

    def follow_pool(self) -> None:
        """Match the host's worker processes to the pool's Ready pods."""
        pods = self.get("pods", "-l", f"workerfleet.dev/pool={POOL}")["items"]
        policies = self.cluster.kubectl(
            "get", "configmap", f"{POOL}-policies", "-n", NAMESPACE, "-o", "json", "--ignore-not-found"
        ).stdout
        if policies:  # else the operator has not reconciled the new pool yet: no pods to follow either
            self.workers.follow(pods, json.loads(policies)["data"]["policies.json"])

    def watch_until(self, done: Callable[[], bool], what: str) -> None:
        """Follow the pool and print it until `done`, at most the timing's scale timeout."""
        deadline = time.monotonic() + self.timing.scale_timeout_seconds
        while time.monotonic() < deadline:
            self.follow_pool()
            self.show_pools()
            if done():
                return
            time.sleep(self.timing.show_every_seconds)
        raise TimeoutError(f"gave up after {self.timing.scale_timeout_seconds:.0f}s waiting for {what}")

    def canary_workers(self, stable_revision: str) -> list[str]:
        """Host workers running any revision but the stable one."""
        return [name for name, revision in self.workers.revisions().items() if revision != stable_revision]

    def plugin(self, *args: str) -> str:
        """`kubectl workerfleet ...`, the plugin a user would run."""
        result = subprocess.run(
            [str(PLUGIN), *args, "-n", NAMESPACE],
            env={**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        return result.stdout + result.stderr

    def replicas(self) -> int:
        return int(self.get("workerpool", POOL)["spec"].get("replicas", 0))

    def pool(self, **changes: Any) -> dict[str, Any]:
        """The demo's WorkerPool, on this demo's Redis and Prometheus."""
        assert self.addresses is not None
        redis_address, prometheus_address = self.addresses
        return worker_pool(
            redis_address, prometheus_address, self.timing, real_node=self.real_node, **changes
        )

    def apply(self, *documents: dict[str, Any]) -> None:
        text = "\n---\n".join(yaml.safe_dump(document) for document in documents)
        self.say(self.cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input_text=text).stdout.rstrip())


def start_cluster(demo: Demo) -> None:
    if demo.real_node:
        demo.step(
            "Local cluster: etcd, kube-apiserver, controller-manager, scheduler, kwok nodes, and a real node"
        )
        if not demo.cluster.is_ready() or not node.is_running(demo.cluster.layout.root):
            demo.cluster.up(real_node=True)
        demo.say(demo.kubectl("get", "nodes", "-o", "wide").rstrip())
        return
    demo.step("Local cluster: etcd, kube-apiserver, controller-manager, scheduler, kwok nodes")
    if not demo.cluster.is_ready():
        demo.cluster.up()
    demo.say(demo.kubectl("get", "nodes").rstrip())


def start_servers(demo: Demo) -> None:
    demo.step("Redis for the jobs, Prometheus with the chart's alerts")
    demo.redis = RedisServer(demo.directory / "redis")
    demo.redis.start()
    demo.stack.callback(demo.redis.stop)
    rules = demo.directory / "alerts.yml"
    # The chart's PrometheusRule, with the Degraded alert's wait shortened so it fires within the demo,
    # and its ServiceMonitor, whose label handling the demo's scrape job copies.
    rendered = chart.helm(
        demo.cluster,
        "template",
        "demo",
        str(chart.CHART),
        "--set",
        "metrics.prometheusRule.enabled=true,metrics.prometheusRule.poolDegradedFor=5s",
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.address=0.0.0.0,networkPolicy.enabled=false",
    ).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    [rule] = [d for d in documents if d["kind"] == "PrometheusRule"]
    [monitor] = [d for d in documents if d["kind"] == "ServiceMonitor"]
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    honor_labels = bool(monitor["spec"]["endpoints"][0].get("honorLabels", False))
    demo.prometheus = PrometheusServer(demo.directory / "prometheus", [rules], honor_labels=honor_labels)
    demo.prometheus.start()
    demo.stack.callback(demo.prometheus.stop)
    demo.workers.prometheus = demo.prometheus
    demo.say(
        f"redis at {demo.redis.address}, prometheus at {demo.prometheus.address}"
        " (alerts loaded from the chart)"
    )
    demo.addresses = (demo.redis.address, demo.prometheus.address)
    if demo.real_node:
        root = demo.cluster.layout.root
        redis_address = demo.stack.enter_context(node.forwarded(root, demo.redis.port, demo.redis.port))
        prometheus = demo.stack.enter_context(
            node.forwarded(root, demo.prometheus.port, demo.prometheus.port)
        )
        demo.addresses = (redis_address, f"http://{prometheus}")
        demo.say(f"the real node's pods reach them at {redis_address} and {prometheus}")


def install_operator(demo: Demo) -> None:
    if demo.real_node:
        install_operator_pod(demo)
        return
    demo.step("helm install workerfleet; the operator runs under the chart's ServiceAccount")
    install_crds(demo.cluster)
    chart.install(demo.cluster, chart.E2E_VALUES)
    demo.say(chart.helm(demo.cluster, "status", chart.RELEASE, "-n", chart.RELEASE_NAMESPACE).stdout.rstrip())
    demo.stack.enter_context(operator_as_chart_identity(demo.cluster, demo.directory / "operator.log"))
    demo.say(f"operator running as {chart.OPERATOR_USER} (log: {demo.directory / 'operator.log'})")


def install_operator_pod(demo: Demo) -> None:
    """The chart with the operator image built here, its pod on the real node serving the metrics API."""
    demo.step("helm install workerfleet with the operator image built here: its pod runs on the real node")
    install_crds(demo.cluster)
    allowed = chart.E2E_VALUES["allowedAddresses"]["queues"]
    values = {
        **chart.E2E_VALUES,
        "image": {"pullPolicy": "Never"},
        "replicaCount": 1,
        "allowedAddresses": {"queues": [*allowed, node.NODE_IP]},
        # Scraped by the demo's Prometheus over the pod network (the bridge enforces no NetworkPolicy).
        "metrics": {"address": "0.0.0.0"},  # noqa: S104  (the real node's pod network only)
        "networkPolicy": {"enabled": False},
        **ON_THE_REAL_NODE,
    }
    chart.install(demo.cluster, values)
    pods = demo.cluster.get(
        "pods", "-l", f"app.kubernetes.io/instance={chart.RELEASE}", namespace=chart.RELEASE_NAMESPACE
    )
    [pod] = [p for p in pods["items"] if _pod_ready(p)]
    assert isinstance(demo.workers, ContainerWorkers)
    demo.workers.operator_target = f"{pod['status']['podIP']}:{METRICS_PORT}"
    demo.say(demo.kubectl("get", "pods", "-n", chart.RELEASE_NAMESPACE, "-o", "wide").rstrip())


def apply_pool(demo: Demo) -> None:
    demo.step(
        f"A JobType and a WorkerPool in namespace {NAMESPACE}: one worker to start with (the default),"
        f" asleep at zero once the queue has been idle for the {demo.timing.cooldown_seconds}s cooldown"
    )
    demo.cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    demo.cluster.kubectl(
        "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
    )
    demo.apply(job_type(), demo.pool())
    demo.watch_until(
        lambda: (
            _condition(demo.get("workerpool", POOL), "ScalingActive") is not None
            and demo.replicas() == 0
            and not demo.workers.processes
        ),
        "the idle pool to sleep",
    )


def burst_and_scale(demo: Demo) -> None:
    timing = demo.timing
    demo.step(f"A burst of {timing.jobs} jobs: the pool wakes, the HPA scales it up, the backlog drains")
    assert demo.redis is not None
    client = redis.Redis(host="127.0.0.1", port=demo.redis.port)
    now = datetime.now(UTC)
    try:
        client.lpush(
            QUEUE,
            *(
                encode(new_envelope(JOB_TYPE, {"image": f"photo-{n}.jpg"}, now=now))
                for n in range(timing.jobs)
            ),
        )
    finally:
        client.close()
    peak = 0

    def drained() -> bool:
        nonlocal peak
        peak = max(peak, demo.replicas())
        return demo.queue_depth() == 0 and peak > 1

    demo.watch_until(drained, "the backlog to drain")
    demo.say(f"backlog drained; the pool peaked at {peak} replicas")
    if demo.prometheus is not None:
        # Each worker's last count, including workers the HPA has already stopped
        handled = demo.prometheus.query_vector(
            "sum by (outcome) (max_over_time(workerfleet_jobs_total[15m]))"
        )
        by_outcome = {sample["metric"]["outcome"]: int(float(sample["value"][1])) for sample in handled}
        demo.say(f"prometheus (scraped every {SCRAPE_INTERVAL_SECONDS}s): jobs by outcome {by_outcome}")
    demo.step(
        f"Idle queue: the HPA scales down, and after {timing.cooldown_seconds}s of cooldown the pool sleeps"
    )
    demo.watch_until(lambda: demo.replicas() == 0 and not demo.workers.processes, "the pool to scale to zero")


def bad_revision_rolls_back(demo: Demo) -> None:
    timing = demo.timing
    assert demo.redis is not None
    demo.step(
        f"Steady traffic, {timing.steady_jobs_per_second:g} jobs/s: the pool keeps at least"
        f" {timing.steady_replicas} workers (autoscaling.minReplicas)"
    )
    producer = SteadyProducer(
        demo.redis.port,
        QUEUE,
        JOB_TYPE,
        timing.steady_jobs_per_second,
        payload=lambda n: {"image": f"steady-{n}.jpg"},
    )
    producer.start()
    demo.stack.callback(producer.stop)
    demo.apply(demo.pool(min_replicas=timing.steady_replicas))
    demo.watch_until(
        lambda: len(demo.workers.processes) >= timing.steady_replicas,
        f"{timing.steady_replicas} workers",
    )
    stable = demo.get("workerpool", POOL)["status"]["stableRevision"]

    demo.step(
        f"Version {BAD_VERSION} fails {timing.bad_failure_rate:.0%} of its jobs: it starts as a canary on"
        f" {timing.canary_weight}% of the workers, and Prometheus is asked every"
        f" {timing.analysis_interval_seconds}s how its error rate compares with the stable workers'"
    )
    demo.apply(
        demo.pool(
            min_replicas=timing.steady_replicas, version=BAD_VERSION, failure_rate=timing.bad_failure_rate
        )
    )

    def rolled_back() -> bool:
        rollout = demo.get("workerpool", POOL)["status"].get("rollout") or {}
        return rollout.get("phase") == "Degraded" and not demo.canary_workers(stable)

    demo.watch_until(rolled_back, "the bad canary to be rolled back")
    producer.stop()
    status = demo.get("workerpool", POOL)["status"]
    degraded = _condition(demo.get("workerpool", POOL), "Degraded") or {}
    demo.say(
        f"rolled back by itself: the canary is at zero, every worker runs the stable revision"
        f" {status['stableRevision']} again"
        f" ({'unchanged' if status['stableRevision'] == stable else 'CHANGED'}).\n"
        f"Degraded={degraded.get('status')} ({degraded.get('reason')}): {degraded.get('message')}"
    )
    demo.say("\n$ kubectl workerfleet status " + POOL)
    demo.say(demo.plugin("status", POOL).rstrip())


REVIEWED = ("ambiguous-1.jpg", "ambiguous-2.jpg", "ambiguous-3.jpg")
BROKEN = ("broken-1.jpg", "broken-2.jpg")


def review_and_replay(demo: Demo) -> None:
    """Jobs a handler cannot decide wait for a person; failed ones are replayed once fixed."""
    demo.step(
        f"Day 2: {len(REVIEWED)} jobs the handler cannot decide go to review, {len(BROKEN)} broken ones"
        " to the dead letters; a person approves, rejects and replays with kubectl workerfleet"
    )
    assert demo.redis is not None
    client = redis.Redis(host="127.0.0.1", port=demo.redis.port)
    now = datetime.now(UTC)
    jobs = [
        new_envelope(JOB_TYPE, {"image": image, "ambiguous": True}, now=now, job_id=image)
        for image in REVIEWED
    ]
    jobs += [
        new_envelope(JOB_TYPE, {"image": image, "broken": True}, now=now, job_id=image) for image in BROKEN
    ]
    try:
        client.lpush(QUEUE, *(encode(job) for job in jobs))
        demo.watch_until(
            lambda: (
                client.llen(f"{QUEUE}.review") == len(REVIEWED) and client.llen(f"{QUEUE}.dlq") >= len(BROKEN)
            ),
            "the jobs to reach review and the dead letters",
        )
        first, second, third = REVIEWED
        for command in (
            ("review", "ls", POOL),
            ("review", "approve", POOL, first, second, "--note", "both faces are fine"),
            ("review", "reject", POOL, third, "--reason", "not a photo"),
            ("dlq", "ls", POOL, "--reason", "PermanentError"),
            ("dlq", "replay", POOL, "--reason", "PermanentError", "--dry-run"),
            ("dlq", "replay", POOL, "--reason", "PermanentError", "--rate", "20"),
        ):
            demo.say(f"\n$ kubectl workerfleet {' '.join(command)}")
            demo.say(demo.plugin(*command).rstrip())
        demo.watch_until(
            lambda: client.llen(f"{QUEUE}.review") == 0 and demo.queue_depth() == 0,
            "the approved and replayed jobs to run",
        )
        left = sorted(json.loads(raw)["id"] for raw in client.lrange(f"{QUEUE}.dlq", 0, -1))
    finally:
        client.close()
    demo.say(
        f"review inbox empty; the dead letters hold {left} (the rejected job, and any the bad canary left)"
    )


# The circuit breaker. The operator reads each worker's own metrics port at its pod's IP, so the
# guarded pool's pods run on a node whose pod IPs are on loopback and its host workers listen there
# (devenv.loopback); its handler fails every attempt while a file is there: a downstream broken and
# mended at will.
GUARDED_POOL = "thumbs-guarded"
GUARDED_QUEUE = f"{QUEUE}:guarded"
GUARDED_REPLICAS = 2
GUARDED_JOBS = 40
GUARDED_JOB_SECONDS = 0.05
BREAKER_POLL_SECONDS = 0.5
BREAKER_TIMEOUT_SECONDS = 90.0
BREAKER_REASONS = (BreakerReason.TRIPPED, BreakerReason.PROBING, BreakerReason.CLOSED)


def guarded_pool(redis_address: str, port: int, timing: Timing) -> dict[str, Any]:
    """A fixed pool of two workers on its own queue whose breaker opens when transient failures
    reach half the jobs over its window, and whose probe follows a short cool-down."""
    environment = {
        "WORKERFLEET_DEMO_JOB_TYPES": JOB_TYPE,
        "WORKERFLEET_DEMO_DURATION_SECONDS": str(GUARDED_JOB_SECONDS),
    }
    container = {
        "name": "worker",
        "image": f"workerfleet/demo-worker:{STABLE_VERSION}",
        "args": ["worker"],
        "env": [{"name": name, "value": value} for name, value in environment.items()],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
    }
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": GUARDED_POOL},
        "spec": {
            "jobTypes": [JOB_TYPE],
            "replicas": GUARDED_REPLICAS,
            "template": {"spec": {"containers": [container]}},
            "queue": {"redis": {"address": redis_address, "list": GUARDED_QUEUE}},
            "worker": {"port": port},
            "circuitBreaker": {
                "maxFailureRatio": 0.5,
                "minSamples": 10,
                "windowSeconds": timing.breaker_window_seconds,
                "coolDownSeconds": timing.breaker_cool_down_seconds,
                "probeJobs": 3,
                "failureClasses": [{"class": "transient", "maxFailureRatio": 0.5}],
            },
        },
    }


@dataclass
class BreakerWatch:
    """The guarded pool as the demo follows it: its host workers, its condition, its Events."""

    demo: Demo
    workers: PodWorkers
    since: datetime
    """Events before this are an earlier run's (the pool's name is the same each run)."""

    def circuit(self) -> dict[str, Any]:
        """The CircuitOpen condition, and beside it (key `breaker`) status.circuitBreaker."""
        pool = self.demo.get("workerpool", GUARDED_POOL)
        breaker = (pool.get("status") or {}).get("circuitBreaker") or {}
        return {**(_condition(pool, "CircuitOpen") or {}), "breaker": breaker}

    def until(self, done: Callable[[dict[str, Any]], bool], what: str) -> float:
        """Follow the pods and print the pool's breaker Events until `done(self.circuit())`; the
        seconds it took."""
        started = time.monotonic()
        deadline = started + BREAKER_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self.workers.sync()
            self.show_events()
            if done(self.circuit()):
                return time.monotonic() - started
            time.sleep(BREAKER_POLL_SECONDS)
        raise TimeoutError(f"gave up after {BREAKER_TIMEOUT_SECONDS:.0f}s waiting for {what}")

    def show_events(self) -> None:
        demo = self.demo
        for event in demo.get("events", "--field-selector", f"involvedObject.name={GUARDED_POOL}")["items"]:
            uid = event["metadata"]["uid"]
            fresh = _event_time(event) >= self.since
            if uid not in demo._events_seen and fresh and event["reason"] in BREAKER_REASONS:
                demo._events_seen.add(uid)
                demo.say(f"    event {event['type']:<7} {event['reason']:<22} {event['message']}")
                at = (_event_time(event) - demo._started).total_seconds()
                demo.events.append(SeenEvent(at, event["type"], event["reason"], event["message"]))

    def dead_letters(self) -> int:
        assert self.demo.redis is not None
        client = redis.Redis(host="127.0.0.1", port=self.demo.redis.port)
        try:
            return int(client.llen(f"{QUEUE}.dlq"))
        finally:
            client.close()


def _push_guarded(demo: Demo, first: int, count: int) -> None:
    assert demo.redis is not None
    client = redis.Redis(host="127.0.0.1", port=demo.redis.port)
    now = datetime.now(UTC)
    try:
        jobs = (
            new_envelope(JOB_TYPE, {"image": f"guarded-{n}.jpg"}, now=now)
            for n in range(first, first + count)
        )
        client.lpush(GUARDED_QUEUE, *(encode(job) for job in jobs))
    finally:
        client.close()


def breaker_trips_and_closes(demo: Demo) -> None:
    """A downstream breaks: the breaker opens before the queue is burnt into the dead letters, and the
    probe closes it once the downstream is mended."""
    timing = demo.timing
    demo.step(
        f"Circuit breaker: pool {GUARDED_POOL} ({GUARDED_REPLICAS} workers, its own queue) opens when"
        f" transient failures reach 50% of the jobs over {timing.breaker_window_seconds}s; its downstream"
        f" breaks, then mends"
    )
    assert demo.redis is not None
    began = time.monotonic()
    switch = demo.directory / "downstream-broken"
    switch.unlink(missing_ok=True)
    port = free_port()
    with on_loopback_node(demo.cluster):
        demo.apply(guarded_pool(demo.redis.address, port, timing))
        workers = PodWorkers(
            demo.cluster,
            NAMESPACE,
            GUARDED_POOL,
            port,
            demo.directory / "guarded-workers",
            {"WORKERFLEET_DEMO_FAIL_WHILE": str(switch)},
            "workerfleet.worker.demo",
        )
        watch = BreakerWatch(demo, workers, datetime.now(UTC).replace(microsecond=0))
        try:
            watch.until(lambda _: len(workers.workers) == GUARDED_REPLICAS, "the guarded pool's workers")
            _push_guarded(demo, 0, GUARDED_JOBS // 2)
            healthy = GUARDED_JOBS // 2
            watch.until(lambda c: c["breaker"].get("samples", 0) >= healthy, "the healthy jobs to be judged")
            circuit = watch.circuit()
            demo.say(
                f"healthy: CircuitOpen={circuit.get('status')} ({circuit.get('reason')}):"
                f" {circuit.get('message')}"
            )

            dead_at_break = watch.dead_letters()
            switch.touch()
            demo.say(
                f"\n--- {datetime.now(UTC):%H:%M:%S}  the downstream breaks: every attempt fails (transient)"
            )
            _push_guarded(demo, GUARDED_JOBS // 2, GUARDED_JOBS)
            to_trip = watch.until(lambda c: c.get("status") == "True", "the breaker to open")
            opened = watch.circuit()
            ratio = opened["breaker"]
            dead_at_open = watch.dead_letters()
            demo.say(
                f"opened {to_trip:.1f}s after the downstream broke: CircuitOpen=True"
                f" ({opened.get('reason')}): {opened.get('message')}; measured failure ratio"
                f" {ratio.get('failureRatio')} of {ratio.get('samples')} jobs; dead-lettered before it"
                f" opened: {dead_at_open - dead_at_break} (out of attempts, maxAttempts 3)"
            )
            demo.say(demo.kubectl("get", "wp", GUARDED_POOL, "-n", NAMESPACE).rstrip())

            cool_down = timing.breaker_cool_down_seconds
            # Open, and the workers (kept in step with breaker.json) take nothing; mended before the probe
            mend_at = time.monotonic() + max(cool_down - 2 * timing.breaker_window_seconds / 5, 0)
            watch.until(lambda _: time.monotonic() >= mend_at, "the time to mend the downstream")
            switch.unlink()
            demo.say(f"\n--- {datetime.now(UTC):%H:%M:%S}  the downstream is mended; new jobs keep coming")
            _push_guarded(demo, GUARDED_JOBS * 3 // 2, GUARDED_JOBS // 4)
            to_close = watch.until(lambda c: c.get("status") == "False", "the probe to close the breaker")
            dead_while_open = watch.dead_letters() - dead_at_open
            closed = watch.circuit()
            demo.say(
                f"closed {to_close:.1f}s after the downstream was mended (cool-down {cool_down}s, 3 probe"
                f" jobs): {closed.get('message')}. Dead-lettered while open: {dead_while_open}"
            )
            demo.notes.append(
                f"Circuit breaker ({GUARDED_POOL}): opened {to_trip:.1f} s after its downstream broke, at a"
                f" measured failure ratio of {ratio.get('failureRatio')} over {ratio.get('samples')} jobs"
                f" (maxFailureRatio 0.5, window {timing.breaker_window_seconds} s); {dead_while_open} jobs"
                f" dead-lettered while open; the probe closed it {to_close:.1f} s after the downstream was"
                f" mended (cool-down {cool_down} s)."
            )
            demo.say(f"(the breaker took {time.monotonic() - began:.0f}s of the demo)")
        finally:
            demo.cluster.kubectl(
                "delete", "workerpool", GUARDED_POOL, "-n", NAMESPACE, "--wait=false", check=False
            )
            workers.stop_all()


def error_rates(demo: Demo, stable_revision: str | None) -> dict[str, list[tuple[float, float]]]:
    """The stable and canary workers' error rates over the run, from the demo's Prometheus.

    The rate is the analysis' own: failed attempts (retried, dead-lettered, failed) over all jobs
    but duplicates, here over a sliding window rather than since the step started.
    """
    if demo.prometheus is None:
        return {}
    selector = f'pool="{POOL}"'
    errors = f'{selector},outcome=~"{"|".join(ERROR_OUTCOMES)}"'
    counted = f'{selector},outcome!~"{"|".join(UNCOUNTED_OUTCOMES)}"'
    query = (
        f"sum by (revision) (rate(workerfleet_jobs_total{{{errors}}}[{ERROR_RATE_WINDOW}]))"
        f" / sum by (revision) (rate(workerfleet_jobs_total{{{counted}}}[{ERROR_RATE_WINDOW}]))"
    )
    origin = demo._started.timestamp()
    rates: dict[str, list[tuple[float, float]]] = {"stable": [], "canary": []}
    for series in demo.prometheus.query_range(query, origin, time.time(), 2):
        role = "stable" if series["metric"].get("revision") == stable_revision else "canary"
        rates[role] += [(float(at) - origin, float(value)) for at, value in series["values"]]
    return rates


def _markers(events: list[SeenEvent]) -> list[Marker]:
    """The Events worth a line across the chart; the HPA's rescales read as ScaledUp or ScaledDown."""
    markers, size = [], 0
    for event in sorted(events, key=lambda e: e.at):
        label = event.reason
        if event.reason == HPA_RESCALE:
            new_size = (
                int(event.message.split("New size: ")[1].split(";")[0])
                if "New size: " in event.message
                else 0
            )
            label, size = (SCALED_UP if new_size > size else SCALED_DOWN), new_size
        elif event.reason not in MARKED_REASONS:
            continue
        markers.append(Marker(event.at, label, event.message, warning=event.type == "Warning"))
    return markers


def report_page(
    samples: list[PoolSample],
    events: list[SeenEvent],
    rates: dict[str, list[tuple[float, float]]],
    started: datetime,
    measured: Sequence[str] = (),
) -> Page:
    """The run on one time axis: the queue, the replicas, the error rates, and the pool's Events."""
    chart_ = Chart(
        f"WorkerPool {NAMESPACE}/{POOL}",
        [
            Panel("Queue depth", [Series("queue depth", [(s.at, s.depth) for s in samples])], unit="jobs"),
            Panel(
                "Replicas",
                [
                    Series("desired", [(s.at, s.desired) for s in samples], step=True),
                    Series("ready", [(s.at, s.ready) for s in samples], step=True),
                ],
            ),
            Panel(
                "Error rate",
                [Series(f"{role} error rate", rates.get(role, [])) for role in ("stable", "canary")],
                y_format="{:.0%}",
                y_min_span=0.1,
            ),
        ],
        _markers(events),
        x_label=f"time since {started:%Y-%m-%d %H:%M:%S} UTC",
    )
    notes = [
        f"make demo, started {started:%Y-%m-%d %H:%M:%S} UTC: queue depth read from Redis and replicas from"
        f" the WorkerPool as the demo polled them; error rates of the stable and canary workers from"
        f" Prometheus over {ERROR_RATE_WINDOW} windows (failed attempts over jobs), as the canary analysis"
        f" counts them; dashed lines are the pool's Events (hover for the message).",
        *measured,
    ]
    return Page(f"workerfleet demo {started:%Y-%m-%d %H:%M} UTC", [chart_], notes)


def write_report(demo: Demo) -> None:
    """`demo-report.html`: the picture of the run, self-contained (inline SVG, no scripts)."""
    if demo.report is None:
        return
    stable = None
    found = demo.kubectl("get", "workerpool", POOL, "-n", NAMESPACE, "-o", "json", "--ignore-not-found")
    if found:
        stable = (json.loads(found).get("status") or {}).get("stableRevision")
    try:
        rates = error_rates(demo, stable)
    except OSError as error:  # Prometheus gone: the picture without the error rates
        demo.say(f"(no error rates in the report: {error})")
        rates = {}
    page = report_page(demo.samples, demo.events, rates, demo._started, demo.notes)
    demo.report.write_text(render_html(page))
    demo.say(f"\nreport: {demo.report.resolve()}  (open it in a browser: file://{demo.report.resolve()})")


SCENARIO: list[Callable[[Demo], None]] = [
    start_cluster,
    start_servers,
    install_operator,
    apply_pool,
    burst_and_scale,
    bad_revision_rolls_back,
    review_and_replay,
    breaker_trips_and_closes,
]


REAL_NODE_SCENARIO: list[Callable[[Demo], None]] = [
    step for step in SCENARIO if step not in (review_and_replay, breaker_trips_and_closes)
]
"""Without the steps that need the host to reach the workers: the review's plugin reads the queue at the
pods' address, and the breaker's downstream switch is a file beside host worker processes."""


def _condition(body: dict[str, Any], condition_type: str) -> dict[str, Any] | None:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition["type"] == condition_type:
            return dict(condition)
    return None


def farewell(demo: Demo) -> None:
    stopped = (
        "Redis and Prometheus (the operator and worker pods stay on the real node)"
        if demo.real_node
        else "the operator, the workers, Redis and Prometheus"
    )
    kubeconfig = demo.cluster.kubeconfig
    prometheus = demo.prometheus.address if demo.prometheus else "(not started)"
    redis_port = demo.redis.port if demo.redis else 0
    demo.say(
        f"""
=== Poke at it (while the demo keeps running: `make demo DEMO_LINGER=SECONDS`)
  export KUBECONFIG={kubeconfig}
  # the pinned kubectl and helm, and the kubectl plugin
  export PATH=$(.venv/bin/python -m devenv.toolchain --print-bin-dirs):$PWD/.venv/bin:$PATH
  kubectl get wp -n {NAMESPACE} -w                # watch the pool
  kubectl describe wp {POOL} -n {NAMESPACE}       # conditions and Events
  kubectl workerfleet status {POOL} -n {NAMESPACE}    # the rollout: revisions, step, last analysis
  kubectl workerfleet retry {POOL} -n {NAMESPACE}     # run the rolled-back canary again from step 1
  kubectl get hpa,deploy,pods -n {NAMESPACE}
  kubectl get --raw /apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/workerfleet_queue_depth
  redis-cli -p {redis_port} llen {QUEUE}          # the queue itself
  {prometheus}/graph?g0.expr=workerfleet_queue_depth   # metrics and the chart's alerts

=== Stop it
  Ctrl-C (or the end of the linger time) stops {stopped};
  `make cluster-down` stops and removes the cluster."""
    )


@contextmanager
def running(demo: Demo) -> Iterator[Demo]:
    """Everything the demo starts is stopped when the block ends: workers first, then servers."""
    with demo.stack:
        demo.stack.callback(demo.workers.stop_all)
        yield demo


def run(demo: Demo, steps: list[Callable[[Demo], None]]) -> None:
    with running(demo):
        try:
            for step in steps:
                step(demo)
        finally:  # the picture of the run so far, even when a step failed
            write_report(demo)
        farewell(demo)
        if demo.timing.linger_seconds:
            demo.say(f"\n(keeping it running for {demo.timing.linger_seconds:.0f}s; Ctrl-C stops it now)")
            deadline = time.monotonic() + demo.timing.linger_seconds
            while time.monotonic() < deadline:
                demo.follow_pool()
                time.sleep(demo.timing.show_every_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.demo", description=__doc__)
    parser.add_argument(
        "--linger", type=float, default=0.0, metavar="SECONDS", help="keep running afterwards"
    )
    parser.add_argument(
        "--real-node", action="store_true", help="workers (and the operator) as containers on the real node"
    )
    args = parser.parse_args(argv)
    cluster = Cluster()
    directory = cluster.layout.root / "demo"
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timing = dataclasses.replace(REAL_NODE_TIMING if args.real_node else Timing(), linger_seconds=args.linger)
    demo = Demo(cluster, directory, timing, real_node=args.real_node)
    demo.report = REPORT
    try:
        run(demo, REAL_NODE_SCENARIO if args.real_node else SCENARIO)
    except KeyboardInterrupt:
        demo.say("\ninterrupted: stopped the operator, the workers, Redis and Prometheus")
    demo.say(f"\ndemo took {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
