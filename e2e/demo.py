"""`make demo`: workerfleet doing real work on the local cluster, from a burst of jobs to an idle pool.

    python -m e2e.demo [--linger SECONDS]

It brings up the local cluster, installs the chart (CRDs, RBAC, the operator's Deployment) and runs
the operator on this host under the chart's ServiceAccount token (pods are simulated, so the
operator's pod runs nothing). A real Redis holds the jobs and a real Prometheus scrapes the operator
and the workers, with the chart's alerts loaded. Worker pods are simulated too, so for every Ready
worker pod of the pool one `workerfleet worker` process runs on this host with that pod's
environment and the pool's policies: when the HPA scales the pool, the work really speeds up.

The scenario is a list of steps (`SCENARIO`); each takes the running `Demo` and prints as it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import redis
import yaml

from e2e import chart
from e2e.cluster import Cluster
from e2e.operator import METRICS_PORT, install_crds, operator_as_chart_identity
from e2e.prometheus import SCRAPE_INTERVAL_SECONDS, PrometheusServer
from e2e.worker.servers import RedisServer, free_port
from workerfleet.worker.envelope import encode, new_envelope

NAMESPACE = "workerfleet-demo"
POOL = "thumbs"
JOB_TYPE = "resize-image"
QUEUE = "jobs:resize-image"
WORKER = Path(sys.executable).parent / "workerfleet"
WORKER_STOP_SECONDS = 30.0


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
            "idempotency": {"keyField": "image"},
        },
    }


def worker_pool(redis_address: str, timing: Timing) -> dict[str, Any]:
    """A pool that sleeps at zero and scales on queue depth; its workers run the demo handler."""
    environment = {
        "WORKERFLEET_HANDLERS": "workerfleet.worker.demo",
        "WORKERFLEET_DEMO_JOB_TYPES": JOB_TYPE,
        "WORKERFLEET_DEMO_DURATION_SECONDS": str(timing.job_seconds),
        "WORKERFLEET_DEMO_FAILURE_RATE": "0.02",
    }
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": POOL},
        "spec": {
            "jobTypes": [JOB_TYPE],
            "replicas": 0,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "worker",
                            "image": "workerfleet/demo-worker:0.1.0",
                            "args": ["worker"],
                            "env": [{"name": name, "value": value} for name, value in environment.items()],
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ]
                }
            },
            "queue": {"redis": {"address": redis_address, "list": QUEUE}},
            "autoscaling": {
                "minReplicas": 0,
                "maxReplicas": timing.max_replicas,
                "targetDepthPerReplica": timing.target_per_replica,
                "pollingIntervalSeconds": 2,
                "cooldownSeconds": timing.cooldown_seconds,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}},
            },
        },
    }


@dataclass
class HostWorkers:
    """One `workerfleet worker` process on this host per Ready worker pod of the pool."""

    directory: Path
    prometheus: PrometheusServer | None
    processes: dict[str, tuple[subprocess.Popen[bytes], int]] = field(default_factory=dict)

    def follow(self, pods: list[dict[str, Any]], policies: str) -> None:
        ready = {pod["metadata"]["name"]: pod for pod in pods if _pod_ready(pod)}
        for name in sorted(set(self.processes) - set(ready)):
            self._stop(name)
        for name in sorted(set(ready) - set(self.processes)):
            self._start(name, ready[name], policies)
        if self.prometheus is not None:
            self.prometheus.set_targets(
                [f"127.0.0.1:{METRICS_PORT}", *(f"127.0.0.1:{port}" for _, port in self.processes.values())]
            )

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
        self.processes[pod_name] = (process, metrics_port)

    def _stop(self, pod_name: str) -> None:
        """SIGTERM, as the kubelet would: the worker finishes the job it holds, then exits."""
        process, _ = self.processes.pop(pod_name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self._stop(name)


def _pod_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


class Demo:
    """The running parts of the demo and what it has shown so far."""

    def __init__(self, cluster: Cluster, directory: Path, timing: Timing, out: TextIO = sys.stdout) -> None:
        self.cluster = cluster
        self.directory = directory
        self.timing = timing
        self.out = out
        self.stack = ExitStack()
        self.redis: RedisServer | None = None
        self.prometheus: PrometheusServer | None = None
        self.workers = HostWorkers(directory / "workers", None)
        self._events_seen: set[str] = set()
        self._last_table = ""

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def step(self, title: str) -> None:
        self.say(f"\n=== {title}")

    def kubectl(self, *args: str) -> str:
        return self.cluster.kubectl(*args).stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-n", NAMESPACE, "-o", "json"))

    def show_pools(self) -> None:
        """`kubectl get wp` and the pool's Events not shown yet."""
        table = self.kubectl("get", "wp", "-n", NAMESPACE)
        depth = self.queue_depth()
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        if table != self._last_table:
            workers = len(self.workers.processes)
            self.say(f"--- {stamp}  kubectl get wp   (Redis {QUEUE}: {depth} waiting, {workers} workers)")
            self.say(table.rstrip())
            self._last_table = table
        for event in self.get("events", "--field-selector", f"involvedObject.name={POOL}")["items"]:
            uid = event["metadata"]["uid"]
            if uid not in self._events_seen:
                self._events_seen.add(uid)
                self.say(f"    event {event['type']:<7} {event['reason']:<22} {event['message']}")

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
        policies = self.get("configmap", f"{POOL}-policies")["data"]["policies.json"]
        self.workers.follow(pods, policies)

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

    def replicas(self) -> int:
        return int(self.get("workerpool", POOL)["spec"].get("replicas", 0))


def start_cluster(demo: Demo) -> None:
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
    rendered = chart.helm(
        demo.cluster, "template", "demo", str(chart.CHART), "--set", "metrics.prometheusRule.enabled=true"
    ).stdout
    [rule] = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "PrometheusRule"]
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    demo.prometheus = PrometheusServer(demo.directory / "prometheus", [rules])
    demo.prometheus.start()
    demo.stack.callback(demo.prometheus.stop)
    demo.workers.prometheus = demo.prometheus
    demo.say(
        f"redis at {demo.redis.address}, prometheus at {demo.prometheus.address}"
        " (alerts loaded from the chart)"
    )


def install_operator(demo: Demo) -> None:
    demo.step("helm install workerfleet; the operator runs under the chart's ServiceAccount")
    install_crds(demo.cluster)
    chart.install(demo.cluster, chart.E2E_VALUES)
    demo.say(chart.helm(demo.cluster, "status", chart.RELEASE, "-n", chart.RELEASE_NAMESPACE).stdout.rstrip())
    demo.stack.enter_context(operator_as_chart_identity(demo.cluster, demo.directory / "operator.log"))
    demo.say(f"operator running as {chart.OPERATOR_USER} (log: {demo.directory / 'operator.log'})")


def apply_pool(demo: Demo) -> None:
    demo.step(f"A JobType and a WorkerPool in namespace {NAMESPACE}, asleep at zero replicas")
    assert demo.redis is not None
    demo.cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    demo.cluster.kubectl(
        "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
    )
    documents = [job_type(), worker_pool(demo.redis.address, demo.timing)]
    text = "\n---\n".join(yaml.safe_dump(document) for document in documents)
    demo.say(demo.cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input_text=text).stdout.rstrip())
    demo.watch_until(
        lambda: _condition(demo.get("workerpool", POOL), "ScalingActive") is not None,
        "the pool to be watched",
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
        handled = demo.prometheus.query_vector("sum by (outcome) (workerfleet_jobs_total)")
        by_outcome = {sample["metric"]["outcome"]: sample["value"][1] for sample in handled}
        demo.say(f"prometheus (scraped every {SCRAPE_INTERVAL_SECONDS}s): jobs by outcome {by_outcome}")
    demo.step(
        f"Idle queue: the HPA scales down, and after {timing.cooldown_seconds}s of cooldown the pool sleeps"
    )
    demo.watch_until(lambda: demo.replicas() == 0 and not demo.workers.processes, "the pool to scale to zero")


SCENARIO: list[Callable[[Demo], None]] = [
    start_cluster,
    start_servers,
    install_operator,
    apply_pool,
    burst_and_scale,
]


def _condition(body: dict[str, Any], condition_type: str) -> dict[str, Any] | None:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition["type"] == condition_type:
            return dict(condition)
    return None


def farewell(demo: Demo) -> None:
    kubeconfig = demo.cluster.kubeconfig
    prometheus = demo.prometheus.address if demo.prometheus else "(not started)"
    redis_port = demo.redis.port if demo.redis else 0
    demo.say(
        f"""
=== Poke at it (while the demo keeps running: `make demo DEMO_LINGER=SECONDS`)
  export KUBECONFIG={kubeconfig}
  export PATH=$(.venv/bin/python -m e2e.toolchain --print-bin-dirs):$PATH   # the pinned kubectl and helm
  kubectl get wp -n {NAMESPACE} -w                # watch the pool
  kubectl describe wp {POOL} -n {NAMESPACE}       # conditions and Events
  kubectl get hpa,deploy,pods -n {NAMESPACE}
  kubectl get --raw /apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/workerfleet_queue_depth
  redis-cli -p {redis_port} llen {QUEUE}          # the queue itself
  {prometheus}/graph?g0.expr=workerfleet_queue_depth   # metrics and the chart's alerts

=== Stop it
  Ctrl-C (or the end of the linger time) stops the operator, the workers, Redis and Prometheus;
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
        for step in steps:
            step(demo)
        farewell(demo)
        if demo.timing.linger_seconds:
            demo.say(f"\n(keeping it running for {demo.timing.linger_seconds:.0f}s; Ctrl-C stops it now)")
            deadline = time.monotonic() + demo.timing.linger_seconds
            while time.monotonic() < deadline:
                demo.follow_pool()
                time.sleep(demo.timing.show_every_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__)
    parser.add_argument(
        "--linger", type=float, default=0.0, metavar="SECONDS", help="keep running afterwards"
    )
    args = parser.parse_args(argv)
    cluster = Cluster()
    directory = cluster.layout.root / "demo"
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    demo = Demo(cluster, directory, Timing(linger_seconds=args.linger))
    try:
        run(demo, SCENARIO)
    except KeyboardInterrupt:
        demo.say("\ninterrupted: stopped the operator, the workers, Redis and Prometheus")
    demo.say(f"\ndemo took {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
