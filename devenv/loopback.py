"""Worker processes standing in for a pool's pods, reachable where the pods would be: for the
fleet-safety e2e tests and the demo's circuit breaker, whose operator reads the workers' own ports.

kwok runs nothing. Inside `on_loopback_node` the pods land on a fake node whose pod CIDR is on
loopback (kwok gives pods IPs from their node's spec.podCIDR), so for every Ready pod of the pool one
`workerfleet worker` process runs on this host listening on that pod's IP and the pool's worker port:
the operator reads it at podIP:port exactly as in a real cluster. (Only there: Services refuse
loopback endpoints, so the other nodes keep their usual pod CIDR.) Playing the kubelet, `sync` also
copies the pool's policies ConfigMap (policies.json and breaker.json) into the directory the
processes read, as a ConfigMap volume is updated in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from devenv.cluster import FAKE_NODES, Cluster, _fake_node
from workerfleet.api.worker_contract import BREAKER_FILE, JOBS_IN_FLIGHT_METRIC, JOBS_METRIC, POLICIES_FILE

WORKERFLEET = Path(sys.executable).parent / "workerfleet"
STOP_SECONDS = 10.0
LOOPBACK_NODE = "kwok-loopback"
LOOPBACK_POD_CIDR = "127.244.0.0/24"


@contextmanager
def on_loopback_node(cluster: Cluster) -> Iterator[None]:
    """New pods go to the loopback node alone (the usual nodes cordoned) until the block ends; then the
    node goes, before the usual nodes are uncordoned."""
    node = {**_fake_node(LOOPBACK_NODE), "spec": {"podCIDR": LOOPBACK_POD_CIDR}}
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(node))
    cluster.kubectl("wait", "--for=condition=Ready", "--timeout=60s", f"node/{LOOPBACK_NODE}")
    for name in FAKE_NODES:
        cluster.kubectl("cordon", name)
    try:
        yield
    finally:
        # Gone before the usual nodes take pods again, so no later test's pod lands on a loopback IP
        # (Services refuse loopback endpoints); the pod garbage collector takes what is left on it.
        cluster.kubectl("delete", "node", LOOPBACK_NODE, "--timeout=60s")
        for name in FAKE_NODES:
            cluster.kubectl("uncordon", name)


def read_metrics(address: str) -> tuple[dict[str, float], float]:
    """(jobs by outcome, jobs in flight) of one worker."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=2) as response:
        text = response.read().decode()
    outcomes: dict[str, float] = {}
    in_flight = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == JOBS_METRIC:
                outcome = sample.labels["outcome"]
                outcomes[outcome] = outcomes.get(outcome, 0.0) + sample.value
            elif sample.name == JOBS_IN_FLIGHT_METRIC:
                in_flight += sample.value
    return outcomes, in_flight


@dataclass
class PodWorker:
    process: subprocess.Popen[bytes]
    address: str
    ready_at: float


@dataclass
class PodWorkers:
    cluster: Cluster
    namespace: str
    pool: str
    port: int
    directory: Path
    environment: dict[str, str]
    handlers: str
    """The handler module the processes import (`workerfleet worker --handlers`)."""
    workers: dict[str, PodWorker] = field(default_factory=dict)
    interrupted: int = 0
    """Jobs held by workers whose pods went away: the jobs a scale-in cut off."""

    def pods(self) -> dict[str, dict[str, Any]]:
        listing = self.cluster.get(
            "pods", "-l", f"workerfleet.dev/pool={self.pool}", namespace=self.namespace
        )
        return {
            pod["metadata"]["name"]: pod
            for pod in (listing or {}).get("items") or []
            if not pod["metadata"].get("deletionTimestamp") and _ready(pod) and pod["status"].get("podIP")
        }

    def sync_files(self) -> None:
        config_map = self.cluster.get(f"configmap/{self.pool}-policies", namespace=self.namespace) or {}
        self.directory.mkdir(parents=True, exist_ok=True)
        for key in (POLICIES_FILE, BREAKER_FILE):
            value = (config_map.get("data") or {}).get(key)
            if value is not None and (
                not (self.directory / key).exists() or (self.directory / key).read_text() != value
            ):
                staged = self.directory / f".{key}"
                staged.write_text(value)
                staged.replace(self.directory / key)

    def sync(self, only: set[str] | None = None) -> dict[str, dict[str, Any]]:
        """Stop the workers of pods gone (counting the jobs they held), start those of new Ready pods
        (of `only` when given); returns the Ready pods."""
        self.sync_files()
        pods = self.pods()
        for name in sorted(set(self.workers) - set(pods)):
            self._stop(name)
        for name in sorted(set(pods) - set(self.workers)):
            if only is None or name in only:
                self._start(name, pods[name])
        return pods

    def in_flight(self) -> dict[str, float]:
        return {name: read_metrics(worker.address)[1] for name, worker in self.workers.items()}

    def outcomes(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for worker in self.workers.values():
            for outcome, value in read_metrics(worker.address)[0].items():
                total[outcome] = total.get(outcome, 0.0) + value
        return total

    def _start(self, name: str, pod: dict[str, Any]) -> None:
        [container] = pod["spec"]["containers"]
        ip = pod["status"]["podIP"]
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join(sys.path),
            **{entry["name"]: entry["value"] for entry in container.get("env", []) if "value" in entry},
            **self.environment,
            "WORKERFLEET_POLICIES": str(self.directory / POLICIES_FILE),
            "WORKERFLEET_WORKER_ID": name,
            "WORKERFLEET_METRICS_ADDRESS": ip,
            "WORKERFLEET_METRICS_PORT": str(self.port),
        }
        with (self.directory / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [str(WORKERFLEET), "worker", "--handlers", self.handlers],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.workers[name] = PodWorker(process, f"{ip}:{self.port}", 0.0)

    def _stop(self, name: str) -> None:
        """The pod is gone: the jobs its worker holds are cut off (as by a grace period shorter than
        the job), counted, and the process killed; the queue gives the jobs to another worker later."""
        worker = self.workers.pop(name)
        with contextlib.suppress(OSError):  # not serving yet: it held nothing
            self.interrupted += round(read_metrics(worker.address)[1])
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=STOP_SECONDS)

    def stop_all(self) -> None:
        for name in list(self.workers):
            worker = self.workers.pop(name)
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait(timeout=STOP_SECONDS)


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        condition["type"] == "Ready" and condition["status"] == "True"
        for condition in pod.get("status", {}).get("conditions") or []
    )
