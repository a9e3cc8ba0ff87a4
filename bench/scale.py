"""How the operator keeps up with many pools, next to the cluster's own pace.

For each size (100, 300, 1000 pools by default; `--sizes` to choose), on the local cluster with a
real Redis for the autoscaled quarter of the pools:

1. floor: the children the operator would make for those pools (Deployment, ServiceAccount, Role,
   RoleBinding, ConfigMap), applied raw with one `kubectl apply --server-side`, timed until every
   Deployment is Available: the pace of the cluster itself (controller-manager, scheduler, kwok);
2. cold start: the pools applied while the operator is stopped, then the operator started, timed
   until every pool is Ready; the ratio to the floor says what the operator adds;
3. a quiet minute: nothing changes; the operator's requests by verb, its writes, its memory;
4. restart over Ready pools: writes sent (the target is none) and the time until its requests stop;
5. live: as many pools again applied while the operator runs, timed until all are Ready.

Requests are counted from the API server's audit log (every request of the benchmark's operator
identity is logged), RSS from /proc. Prints a table, writes `bench/results/scale.json` and an SVG plot
of time and memory against pool count (`bench/results/scale.svg`). Uses a running cluster or brings
one up (and stops it); removes everything it made.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from bench.plots import scale_chart
from devenv.cluster import PODS_PER_FAKE_NODE, REPOSITORY, Cluster
from devenv.operator import OperatorProcess, install_crds
from devenv.pki import BENCH_OPERATOR_USER
from devenv.servers import RedisServer
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.workerpool import WorkerPoolSpec
from workerfleet.planners.children import PoolRef, plan_children
from workerfleet.report import render_svg

NAMESPACES = 10
AUTOSCALED_SHARE = 4
"""Every 4th pool scales on its Redis queue."""
CANARY_EVERY = 50
"""Every 50th pool carries a canary rollout."""
POLL_SECONDS = 2.0
READY_TIMEOUT_SECONDS = 1800.0
QUIET_SECONDS = 60.0
RESTART_WATCH_SECONDS = 600.0
"""The longest a restart is followed: until its requests stop, at most this long."""
SILENCE_SECONDS = 5.0
"""The operator has caught up once it has sent no request for this long."""
OPERATOR_PORT_SHIFT = 17
LATENCY_ROUNDS = 7
RESULTS = REPOSITORY / "bench" / "results"
RAW_KINDS = ("Deployment", "ServiceAccount", "Role", "RoleBinding", "ConfigMap")


@dataclass
class SizeResult:
    pools: int
    floor_seconds: float = 0.0
    cold_seconds: float = 0.0
    live_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    ready_rss_mib: float = 0.0
    """At the moment every pool is Ready (the catch-up is over)."""
    settled_rss_mib: float = 0.0
    """After the quiet minute that follows."""
    catch_up_requests_per_second: dict[str, float] = field(default_factory=dict)
    quiet_requests_per_minute: dict[str, int] = field(default_factory=dict)
    quiet_writes: int = 0
    quiet_polls_per_second: float = 0.0
    quiet_cpu_percent: float = 0.0
    """The operator's CPU use in the quiet minute, in percent of one core: mostly the queue polls."""
    restart_writes: int = 0
    restart_catch_up_seconds: float = 0.0
    restart_requests: int = 0

    @property
    def cold_ratio(self) -> float:
        return self.cold_seconds / self.floor_seconds

    @property
    def live_ratio(self) -> float:
        return self.live_seconds / self.floor_seconds


DELEGABLE = ('--delegable-permissions=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]',)
"""The operator may grant the benchmark's JobType exactly what it asks for."""


def _job_type() -> dict[str, Any]:
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": "work"},
        "spec": {
            "lane": "fast",
            "timeoutSeconds": 30,
            "permissions": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["get"],
                    "resourceNames": ["presets"],
                }
            ],
        },
    }


def _pool(index: int, redis_address: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "jobTypes": ["work"],
        "replicas": 1,
        "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
        "queue": {"redis": {"address": redis_address, "list": f"jobs:pool-{index}"}},
    }
    if index % AUTOSCALED_SHARE == 0:
        spec.pop("replicas")
        spec["autoscaling"] = {
            "minReplicas": 1,
            "maxReplicas": 3,
            "targetDepthPerReplica": 50,
            "pollingIntervalSeconds": 5,
        }
    if index % CANARY_EVERY == 1:
        spec["rollout"] = {"canary": {"steps": [{"weight": 50, "pauseSeconds": 30}, {"weight": 100}]}}
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": f"pool-{index}"},
        "spec": spec,
    }


def _namespaces(prefix: str) -> list[str]:
    return [f"{prefix}-{index}" for index in range(NAMESPACES)]


def _spread(pools: int, prefix: str) -> Iterator[tuple[str, int]]:
    """(namespace, pool index) for every pool, spread over the namespaces."""
    names = _namespaces(prefix)
    for index in range(pools):
        yield names[index % NAMESPACES], index


def _apply(cluster: Cluster, documents: list[dict[str, Any]]) -> None:
    text = "\n---\n".join(yaml.safe_dump(document) for document in documents)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input_text=text, timeout=1200)


def _create_namespaces(cluster: Cluster, prefix: str) -> None:
    names = _namespaces(prefix)
    _apply(cluster, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} for name in names])
    for name in names:
        cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=120s")


def _delete_namespaces(cluster: Cluster, prefixes: list[str]) -> None:
    names = [name for prefix in prefixes for name in _namespaces(prefix)]
    cluster.kubectl("delete", "namespace", *names, "--ignore-not-found", "--wait=false", timeout=300)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        listed = cluster.kubectl("get", "namespaces", "-o", "name").stdout.split()
        if not any(f"namespace/{name}" in listed for name in names):
            return
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"namespaces {names} were not deleted within {READY_TIMEOUT_SECONDS:.0f}s")


def _raw_children(pools: int, prefix: str, redis_address: str) -> list[dict[str, Any]]:
    """What the operator would apply for these pools, without ownerReferences (no pool owns them)."""
    job_types = {"work": JobTypeSpec.model_validate(_job_type()["spec"])}
    documents: list[dict[str, Any]] = []
    for namespace, index in _spread(pools, prefix):
        pool = _pool(index, redis_address)
        spec = WorkerPoolSpec.model_validate({**pool["spec"], "autoscaling": None, "rollout": None})
        for manifest in plan_children(
            PoolRef(pool["metadata"]["name"], namespace, ""), spec, job_types
        ).apply:
            if manifest["kind"] in RAW_KINDS:
                manifest["metadata"].pop("ownerReferences", None)
                documents.append(manifest)
    return documents


LIST_ATTEMPTS = 5
"""A failed `kubectl get -A` (the API server busy on a loaded machine) is tried again this many times."""


def _list_all(cluster: Cluster, resource: str) -> str:
    """`kubectl get RESOURCE -A -o json`, tried again after a failure (its stderr printed)."""
    for attempt in range(1, LIST_ATTEMPTS + 1):
        result = cluster.kubectl("get", resource, "-A", "-o", "json", timeout=300, check=False)
        if result.returncode == 0:
            return result.stdout
        print(f"  kubectl get {resource} -A failed ({attempt}/{LIST_ATTEMPTS}): {result.stderr.strip()}")
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"kubectl get {resource} -A failed {LIST_ATTEMPTS} times")


def _ready_counts(
    cluster: Cluster, resource: str, prefix: str, is_ready: Callable[[dict[str, Any]], bool]
) -> int:
    listing = json.loads(_list_all(cluster, resource))
    return sum(
        1
        for item in listing["items"]
        if item["metadata"]["namespace"].startswith(f"{prefix}-") and is_ready(item)
    )


def _deployment_available(deployment: dict[str, Any]) -> bool:
    status = deployment.get("status") or {}
    return int(status.get("availableReplicas") or 0) >= int(deployment["spec"].get("replicas") or 0) and any(
        c["type"] == "Available" and c["status"] == "True" for c in status.get("conditions") or []
    )


def _pool_ready(pool: dict[str, Any]) -> bool:
    status = pool.get("status") or {}
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    ) and int(status.get("readyReplicas") or 0) >= int(pool["spec"].get("replicas") or 1)


def _wait_all(
    cluster: Cluster, resource: str, prefix: str, expected: int, is_ready: Callable[[dict[str, Any]], bool]
) -> float:
    """Seconds until `expected` objects of `resource` in the prefix's namespaces are ready (from now)."""
    started = time.monotonic()
    deadline = started + READY_TIMEOUT_SECONDS
    ready = 0
    while time.monotonic() < deadline:
        ready = _ready_counts(cluster, resource, prefix, is_ready)
        if ready >= expected:
            return time.monotonic() - started
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"{ready} of {expected} {resource} ready within {READY_TIMEOUT_SECONDS:.0f}s")


class RssSampler:
    """The operator process's resident memory, sampled every half second while it runs."""

    def __init__(self, process: OperatorProcess) -> None:
        self._process = process
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current_kib(self) -> int:
        pid = self._process.pid
        if pid is None:
            return 0
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return 0
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak_kib = max(self.peak_kib, self.current_kib())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _polls(operator: OperatorProcess) -> float:
    """Queue reads the operator has made so far, from its own metrics."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("workerfleet_queue_polls_total{")
    )


def _cpu_seconds(operator: OperatorProcess) -> float:
    """User and system CPU time of the operator process so far."""
    fields = Path(f"/proc/{operator.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class AuditLog:
    """The benchmark operator's requests, as the API server logged them."""

    def __init__(self, cluster: Cluster) -> None:
        self._path = cluster.layout.audit_log

    def requests(self, since: float, until: float) -> list[dict[str, Any]]:
        """Requests of the benchmark operator's user received between two wall-clock times (Unix seconds)."""
        found = []
        paths = sorted(self._path.parent.glob(self._path.name + "*"))
        for path in paths:
            with path.open() as lines:
                for line in lines:
                    if f'"username":"{BENCH_OPERATOR_USER}"' not in line:
                        continue
                    event = json.loads(line)
                    if event.get("stage") != "ResponseComplete":
                        continue
                    received = datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
                    if since <= received <= until:
                        found.append(event)
        return found


def _by_verb(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(event["verb"]) for event in events)


def _is_write(event: dict[str, Any]) -> bool:
    return event["verb"] not in {"get", "list", "watch"}


def _caught_up_at(events: list[dict[str, Any]], started: float) -> float:
    """Seconds from `started` to the last request before the operator went quiet."""
    times = sorted(datetime.fromisoformat(e["requestReceivedTimestamp"]).timestamp() for e in events)
    last = started
    for moment in times:
        if moment - last > SILENCE_SECONDS and moment > started + SILENCE_SECONDS:
            break
        last = moment
    return last - started


@contextmanager
def _cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    if cluster.is_ready():
        yield cluster
        return
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


def _floor(cluster: Cluster, pools: int, prefix: str, redis: RedisServer) -> float:
    """Seconds from one raw apply of the pools' children until every Deployment is Available."""
    _create_namespaces(cluster, prefix)
    raw = _raw_children(pools, prefix, redis.address)
    started = time.monotonic()
    _apply(cluster, raw)
    _wait_all(cluster, "deployments", prefix, pools, _deployment_available)
    seconds = time.monotonic() - started
    _delete_namespaces(cluster, [prefix])
    print(f"  floor: {seconds:.1f}s for {pools} Deployments applied raw", flush=True)
    return seconds


def _restart(operator: OperatorProcess, audit: AuditLog, result: SizeResult) -> None:
    """Restart the operator over Ready pools: what it writes, and when its requests stop."""
    operator.stop()
    wall = time.time()
    operator.start()
    deadline = time.monotonic() + RESTART_WATCH_SECONDS
    restart = []
    while time.monotonic() < deadline:
        time.sleep(SILENCE_SECONDS)
        restart = audit.requests(wall, time.time())
        quiet_since = max(
            (datetime.fromisoformat(e["requestReceivedTimestamp"]).timestamp() for e in restart), default=wall
        )
        if time.time() - quiet_since > 2 * SILENCE_SECONDS:
            break
    result.restart_writes = sum(1 for event in restart if _is_write(event))
    result.restart_requests = len(restart)
    result.restart_catch_up_seconds = round(_caught_up_at(restart, wall), 1)
    print(
        f"  restart: {result.restart_writes} writes, caught up in {result.restart_catch_up_seconds}s",
        flush=True,
    )


def _quiet_minute(operator: OperatorProcess, audit: AuditLog, rss: RssSampler, result: SizeResult) -> None:
    """A minute in which nothing changes: requests, writes, queue polls, CPU and memory."""
    time.sleep(10)
    quiet_from = time.time()
    polls, cpu = _polls(operator), _cpu_seconds(operator)
    time.sleep(QUIET_SECONDS)
    result.quiet_polls_per_second = round((_polls(operator) - polls) / QUIET_SECONDS, 1)
    result.quiet_cpu_percent = round(100 * (_cpu_seconds(operator) - cpu) / QUIET_SECONDS, 1)
    quiet = audit.requests(quiet_from, quiet_from + QUIET_SECONDS)
    result.quiet_requests_per_minute = dict(sorted(_by_verb(quiet).items()))
    result.quiet_writes = sum(1 for event in quiet if _is_write(event))
    result.settled_rss_mib = round(rss.current_kib() / 1024, 1)
    result.peak_rss_mib = round(rss.peak_kib / 1024, 1)
    print(
        f"  quiet minute: {result.quiet_writes} writes; RSS peak {result.peak_rss_mib:.0f} MiB,"
        f" settled {result.settled_rss_mib:.0f} MiB",
        flush=True,
    )


def _pools_manifests(pools: int, prefix: str, redis: RedisServer) -> list[dict[str, Any]]:
    """A JobType in each namespace and the pools spread over them."""
    job_types = [{**_job_type(), "metadata": {"name": "work", "namespace": ns}} for ns in _namespaces(prefix)]
    documents = []
    for namespace, index in _spread(pools, prefix):
        pool = _pool(index, redis.address)
        pool["metadata"]["namespace"] = namespace
        documents.append(pool)
    return job_types + documents


def _measure(cluster: Cluster, pools: int, redis: RedisServer, log: Path) -> SizeResult:
    result = SizeResult(pools=pools)
    audit = AuditLog(cluster)
    tag = f"scale{pools}"

    result.floor_seconds = _floor(cluster, pools, f"{tag}-raw", redis)

    # 2. Cold start over pools applied while the operator was stopped.
    # Ports of its own: this benchmark needs no external metrics API registered (nor leaves one).
    operator = OperatorProcess(
        cluster, log, port_shift=OPERATOR_PORT_SHIFT, extra_args=DELEGABLE, register=False
    )
    _create_namespaces(cluster, f"{tag}-cold")
    _apply(cluster, _pools_manifests(pools, f"{tag}-cold", redis))
    try:
        with RssSampler(operator) as rss:
            wall = time.time()
            started = time.monotonic()
            operator.start()
            result.cold_seconds = (time.monotonic() - started) + _wait_all(
                cluster, "workerpools", f"{tag}-cold", pools, _pool_ready
            )
            result.ready_rss_mib = round(rss.current_kib() / 1024, 1)
            catch_up = audit.requests(wall, wall + result.cold_seconds)
            result.catch_up_requests_per_second = {
                verb: round(count / result.cold_seconds, 1)
                for verb, count in sorted(_by_verb(catch_up).items())
            }
            print(
                f"  cold start: all {pools} pools Ready in {result.cold_seconds:.1f}s"
                f" ({result.cold_ratio:.2f} x the floor), RSS {result.ready_rss_mib:.0f} MiB",
                flush=True,
            )

            # 3. A quiet minute.
            _quiet_minute(operator, audit, rss, result)

        # 4. A restart over Ready pools.
        _restart(operator, audit, result)

        # 5. As many pools again, applied while the operator runs.
        _create_namespaces(cluster, f"{tag}-live")
        started = time.monotonic()
        _apply(cluster, _pools_manifests(pools, f"{tag}-live", redis))
        result.live_seconds = (time.monotonic() - started) + _wait_all(
            cluster, "workerpools", f"{tag}-live", pools, _pool_ready
        )
        print(f"  live: {pools} more pools Ready in {result.live_seconds:.1f}s", flush=True)
    finally:
        operator.stop()
        _delete_namespaces(cluster, [f"{tag}-cold", f"{tag}-live"])
    return result


def _apply_and_wait(
    cluster: Cluster, namespace: str, documents: list[dict[str, Any]], condition: str
) -> float:
    """Seconds from one `kubectl apply` until `kubectl wait` (a watch) sees the condition on the last
    document."""
    kind, name = documents[-1]["kind"].lower(), documents[-1]["metadata"]["name"]
    listing = {"apiVersion": "v1", "kind": "List", "items": documents}
    started = time.monotonic()
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input_text=json.dumps(listing))
    cluster.kubectl(
        "wait", f"--for=condition={condition}", f"{kind}/{name}", "-n", namespace, "--timeout=60s"
    )
    return time.monotonic() - started


def single_pool_latency(cluster: Cluster, redis: RedisServer, log: Path) -> tuple[float, float]:
    """Median seconds from one apply of a pool's children, raw, to its Deployment Available; and from the
    apply of the pool itself to Ready; on an otherwise idle cluster with the operator running."""
    prefix = "latency"
    _create_namespaces(cluster, prefix)
    namespace = _namespaces(prefix)[0]
    operator = OperatorProcess(
        cluster, log, port_shift=OPERATOR_PORT_SHIFT, extra_args=DELEGABLE, register=False
    )
    raw, pooled = [], []
    try:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(_job_type()))
        operator.start()
        for round_ in range(LATENCY_ROUNDS):
            job_types = {"work": JobTypeSpec.model_validate(_job_type()["spec"])}
            pool = _pool(1000 + 2 * round_ + 1, redis.address)  # never autoscaled, never a canary
            spec = WorkerPoolSpec.model_validate(pool["spec"])
            children = [
                manifest
                for manifest in plan_children(PoolRef(f"raw-{round_}", namespace, ""), spec, job_types).apply
                if manifest["kind"] in RAW_KINDS
            ]
            for manifest in children:
                manifest["metadata"].pop("ownerReferences", None)
            children.sort(key=lambda manifest: manifest["kind"] == "Deployment")  # waited on: last
            raw.append(_apply_and_wait(cluster, namespace, children, "Available"))
            pool["metadata"]["name"] = f"pooled-{round_}"
            pooled.append(_apply_and_wait(cluster, namespace, [pool], "Ready"))
    finally:
        operator.stop()
        _delete_namespaces(cluster, [prefix])
    return statistics.median(raw), statistics.median(pooled)


def _table(results: list[SizeResult]) -> str:
    header = (
        "| pools | floor (raw) | cold start | ratio | live | ratio | peak RSS | RSS at Ready | settled RSS "
        "| catch-up req/s | quiet req/min | quiet writes | polls/s | quiet CPU | restart writes "
        "| restart catch-up |"
    )
    lines = [header, "|" + "---|" * 16]
    for r in results:
        catch_up = ", ".join(f"{verb} {rate:g}" for verb, rate in r.catch_up_requests_per_second.items())
        quiet = ", ".join(f"{verb} {count}" for verb, count in r.quiet_requests_per_minute.items()) or "0"
        lines.append(
            f"| {r.pools} | {r.floor_seconds:.1f} s | {r.cold_seconds:.1f} s | {r.cold_ratio:.2f} "
            f"| {r.live_seconds:.1f} s | {r.live_ratio:.2f} | {r.peak_rss_mib:.0f} MiB "
            f"| {r.ready_rss_mib:.0f} MiB | {r.settled_rss_mib:.0f} MiB | {catch_up} | {quiet} "
            f"| {r.quiet_writes} "
            f"| {r.quiet_polls_per_second:g} | {r.quiet_cpu_percent:g} % | {r.restart_writes} "
            f"| {r.restart_catch_up_seconds:.1f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="100,300,1000", help="pool counts, comma-separated; empty: one pool's latency only"
    )
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    results: list[SizeResult] = []
    raw = pooled = 0.0
    with _cluster() as cluster, tempfile.TemporaryDirectory() as scratch:
        install_crds(cluster)
        # Room for every pod of the largest size, twice (cold and live run side by side), and spare.
        nodes = max(2, math.ceil(2.5 * max(sizes, default=0) / PODS_PER_FAKE_NODE))
        cluster.ensure_fake_nodes(nodes)
        (Path(scratch) / "redis").mkdir()
        redis = RedisServer(Path(scratch) / "redis")
        redis.start()
        try:
            raw, pooled = single_pool_latency(cluster, redis, Path(scratch) / "operator-latency.log")
            print(
                f"one pool, apply to Ready: {pooled:.2f}s; the same Deployment applied raw, to Available: "
                f"{raw:.2f}s; the operator adds {1000 * (pooled - raw):.0f} ms (medians of {LATENCY_ROUNDS})",
                flush=True,
            )
            for pools in sizes:
                print(f"{pools} pools:", flush=True)
                results.append(_measure(cluster, pools, redis, Path(scratch) / f"operator-{pools}.log"))
        finally:
            redis.stop()
            extra = [f"node/kwok-node-{index}" for index in range(2, nodes)]
            if extra:
                cluster.kubectl("delete", *extra, "--ignore-not-found", "--wait=false")
    if not results:
        return 0
    print(_table(results))
    RESULTS.mkdir(exist_ok=True)
    record = {
        "single_pool": {"raw_deployment_seconds": round(raw, 3), "pool_seconds": round(pooled, 3)},
        "sizes": [asdict(r) for r in results],
    }
    (RESULTS / "scale.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "scale.svg").write_text(render_svg(scale_chart(record)) + "\n")
    print(f"wrote {RESULTS / 'scale.json'} and {RESULTS / 'scale.svg'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
