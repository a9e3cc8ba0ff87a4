"""A real local Kubernetes control plane with no container runtime.

etcd, kube-apiserver (RBAC, PodSecurity admission, service-account tokens, the aggregation layer),
kube-controller-manager, kube-scheduler, and kwok as the kubelet of fake nodes, all on loopback.

    python -m devenv.cluster up       # idempotent: starts what is not running, waits until Ready
    python -m devenv.cluster status
    python -m devenv.cluster down     # stops only the processes it started (by pid), removes state
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devenv import node, pki, toolchain

REPOSITORY = Path(__file__).resolve().parent.parent


class ClusterError(RuntimeError):
    """The control plane did not come up, or is not in a state this module can act on."""


def port_offset() -> int:
    """Shifts every port, so several clusters (one per checkout) can run side by side.

    Give each cluster its own WORKERFLEET_CLUSTER_DIR and a WORKERFLEET_PORT_OFFSET that is a
    multiple of 100 (0, 100, 200, ...), so no two clusters' ports meet.
    """
    offset = int(os.environ.get("WORKERFLEET_PORT_OFFSET", "0"))
    if offset % 100 or not 0 <= offset <= 2000:
        raise ClusterError(f"WORKERFLEET_PORT_OFFSET must be a multiple of 100 within 0..2000, not {offset}")
    return offset


ETCD_CLIENT_PORT = 23790 + port_offset()
ETCD_PEER_PORT = 23800 + port_offset()
APISERVER_PORT = 6443 + port_offset()
CONTROLLER_MANAGER_PORT = 10257 + port_offset()
SCHEDULER_PORT = 10259 + port_offset()
KWOK_PORT = 10247 + port_offset()
FAKE_NODES = ("kwok-node-0", "kwok-node-1")
HPA_SYNC_PERIOD = "5s"
STARTUP_TIMEOUT_SECONDS = 120.0


def state_dir() -> Path:
    return Path(os.environ.get("WORKERFLEET_CLUSTER_DIR", REPOSITORY / ".cluster"))


@dataclass(frozen=True)
class Layout:
    """Where a cluster's state lives on disk."""

    root: Path

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def audit_policy(self) -> Path:
        return self.root / "audit-policy.json"

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"

    def component_kubeconfig(self, name: str) -> Path:
        return self.root / "kubeconfigs" / f"{name}.kubeconfig"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def pid(self, name: str) -> Path:
        return self.pids / f"{name}.pid"


def _write_kubeconfig(path: Path, ca: Path, client: pki.Pair, user: str) -> None:
    def encoded(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "workerfleet",
                "cluster": {
                    "server": f"https://127.0.0.1:{APISERVER_PORT}",
                    "certificate-authority-data": encoded(ca),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": encoded(client.cert),
                    "client-key-data": encoded(client.key),
                },
            }
        ],
        "contexts": [{"name": "workerfleet", "context": {"cluster": "workerfleet", "user": user}}],
        "current-context": "workerfleet",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


HEALTH_URLS = {
    "etcd": f"http://127.0.0.1:{ETCD_CLIENT_PORT}/health",
    "kube-apiserver": f"https://127.0.0.1:{APISERVER_PORT}/readyz",
    "kube-controller-manager": f"https://127.0.0.1:{CONTROLLER_MANAGER_PORT}/healthz",
    "kube-scheduler": f"https://127.0.0.1:{SCHEDULER_PORT}/healthz",
    "kwok": f"http://127.0.0.1:{KWOK_PORT}/healthz",
}
"""Start order; each component is a binary of the same name. Stopped in reverse."""
COMPONENTS = tuple(HEALTH_URLS)


READ_VERBS = frozenset({"get", "list", "watch"})
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # Every request of the benchmark's operator identity, reads included: the scale bench counts
        # them by verb. (The e2e suite's operator runs under the chart's identity, whose reads are not
        # logged.)
        {"level": "Metadata", "users": [pki.BENCH_OPERATOR_USER]},
        {"level": "None", "verbs": ["get", "list", "watch"]},
        # Node and lease heartbeats from kwok and the controllers would drown everything else.
        {"level": "None", "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}]},
        {"level": "None", "resources": [{"group": "", "resources": ["nodes", "nodes/status"]}]},
        {"level": "Metadata"},
    ],
}


@dataclass(frozen=True)
class Component:
    """One control-plane process and the arguments it starts with."""

    name: str
    args: tuple[str, ...]


def _components(layout: Layout, certs: pki.ClusterPki) -> list[Component]:
    kubeconfig = layout.component_kubeconfig
    apiserver_args = (
        f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={APISERVER_PORT}",
        f"--tls-cert-file={certs.apiserver.cert}",
        f"--tls-private-key-file={certs.apiserver.key}",
        f"--client-ca-file={certs.ca.cert}",
        "--authorization-mode=Node,RBAC",
        # PodSecurity is in the default admission chain; of the default-off ones, NodeRestriction, and
        # OwnerReferencesPermissionEnforcement: setting blockOwnerDeletion needs `update` on the
        # owner's finalizers, as on most production clusters (OpenShift enables it by default).
        "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
        # Privileged pods must reach PodSecurity admission so its verdict is the one users see.
        "--allow-privileged=true",
        f"--service-cluster-ip-range={pki.SERVICE_CLUSTER_IP_RANGE}",
        f"--service-account-key-file={certs.service_account_public_key}",
        f"--service-account-signing-key-file={certs.service_account_key}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        # The aggregation layer, so an external metrics APIService can be served.
        f"--requestheader-client-ca-file={certs.front_proxy_ca.cert}",
        f"--requestheader-allowed-names={pki.FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={certs.front_proxy_client.cert}",
        f"--proxy-client-key-file={certs.front_proxy_client.key}",
        # Endpoints may not hold loopback addresses, so the apiserver must not try to publish its own.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        # Every write, with who made it: tests count an operator's writes from here.
        f"--audit-policy-file={layout.audit_policy}",
        f"--audit-log-path={layout.audit_log}",
        "--audit-log-format=json",
        "--audit-log-maxsize=200",
        "--audit-log-maxbackup=1",
    )
    delegated_auth = (
        f"--authentication-kubeconfig={kubeconfig('controller-manager')}",
        f"--authorization-kubeconfig={kubeconfig('controller-manager')}",
    )
    return [
        Component(
            name="etcd",
            args=(
                "--name=workerfleet",
                f"--data-dir={layout.etcd_data}",
                f"--listen-client-urls=http://127.0.0.1:{ETCD_CLIENT_PORT}",
                f"--advertise-client-urls=http://127.0.0.1:{ETCD_CLIENT_PORT}",
                f"--listen-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}",
                f"--initial-cluster=workerfleet=http://127.0.0.1:{ETCD_PEER_PORT}",
                # A throwaway test cluster: durability on power loss buys nothing here.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ),
        ),
        Component(
            name="kube-apiserver",
            args=apiserver_args,
        ),
        Component(
            name="kube-controller-manager",
            args=(
                f"--kubeconfig={kubeconfig('controller-manager')}",
                *delegated_auth,
                "--bind-address=127.0.0.1",
                f"--secure-port={CONTROLLER_MANAGER_PORT}",
                "--controllers=*",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={certs.service_account_key}",
                f"--root-ca-file={certs.ca.cert}",
                f"--cluster-signing-cert-file={certs.ca.cert}",
                f"--cluster-signing-key-file={certs.ca.key}",
                f"--service-cluster-ip-range={pki.SERVICE_CLUSTER_IP_RANGE}",
                f"--horizontal-pod-autoscaler-sync-period={HPA_SYNC_PERIOD}",
                "--profiling=false",
            ),
        ),
        Component(
            name="kube-scheduler",
            args=(
                f"--kubeconfig={kubeconfig('scheduler')}",
                f"--authentication-kubeconfig={kubeconfig('scheduler')}",
                f"--authorization-kubeconfig={kubeconfig('scheduler')}",
                "--bind-address=127.0.0.1",
                f"--secure-port={SCHEDULER_PORT}",
                "--leader-elect=false",
                "--profiling=false",
            ),
        ),
        Component(
            name="kwok",
            args=(
                f"--kubeconfig={kubeconfig('kwok')}",
                f"--config={toolchain.kwok_stages_path()}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--manage-nodes-with-label-selector=",
                "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
                "--disregard-status-with-label-selector=",
                "--cidr=10.244.0.1/16",
                # Anything that dials a node (kubectl logs, exec) must stay on loopback.
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{KWOK_PORT}",
            ),
        ),
    ]


def _is_healthy(name: str, layout: Layout) -> bool:
    url = HEALTH_URLS[name]
    context: ssl.SSLContext | None = None
    if name == "kube-apiserver":
        # /readyz is not public: ask as the admin, and verify the serving certificate.
        context = ssl.create_default_context(cafile=str(layout.pki / "ca.crt"))
        context.load_cert_chain(str(layout.pki / "admin.crt"), str(layout.pki / "admin.key"))
    elif url.startswith("https://"):
        # Controller-manager and scheduler serve self-signed certificates; /healthz is public.
        context = ssl._create_unverified_context()  # noqa: S323
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _binary(name: str) -> Path:
    return toolchain.binaries()[name].path


def _running_pid(layout: Layout, name: str) -> int | None:
    """The pid this module recorded for a component, if that process still runs the same binary."""
    pid_file = layout.pid(name)
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip())
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if _is_zombie(pid):
        return None
    return pid if command_line[0] == str(_binary(name)).encode() else None


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    hint = f"; see {log}" if log else ""
    raise ClusterError(f"{what} not ready after {timeout:.0f}s{hint}")


class Cluster:
    """The local control plane, addressed by its state directory."""

    def __init__(self, root: Path | None = None) -> None:
        self.layout = Layout(root or state_dir())

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    def kubectl(
        self, *args: str, check: bool = True, input_text: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster as the admin."""
        return subprocess.run(
            [str(_binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def get(self, *args: str, namespace: str | None = None) -> Any:
        """`kubectl get ARGS -o json`, parsed; None when kubectl fails (the object does not exist)."""
        scope = ("-n", namespace) if namespace is not None else ()
        result = self.kubectl("get", *args, *scope, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def apply(self, *documents: Mapping[str, Any], namespace: str) -> None:
        """`kubectl apply` the documents, as one YAML stream, into the namespace."""
        text = "\n---\n".join(yaml.safe_dump(dict(document)) for document in documents)
        self.kubectl("apply", "-n", namespace, "-f", "-", input_text=text)

    def condition(self, resource: str, condition_type: str, *, namespace: str) -> dict[str, Any] | None:
        """The status condition of that type on `resource` (`kind/name`); None when there is none yet."""
        body = self.get(resource, namespace=namespace) or {}
        for condition in (body.get("status") or {}).get("conditions") or []:
            if condition["type"] == condition_type:
                return dict(condition)
        return None

    def audit_writes(self, *, user: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        """Write requests the API server recorded, optionally only one user's or in one namespace.

        A request that failed authentication (a revoked token: its event has no user) wrote nothing
        and has no author, so it is left out."""
        if not self.layout.audit_log.exists():
            return []
        events = []
        for line in self.layout.audit_log.read_text().splitlines():
            event = json.loads(line)
            if event["verb"] in READ_VERBS or "username" not in event["user"]:
                continue
            if user is not None and event["user"].get("username") != user:
                continue
            if namespace is not None and event.get("objectRef", {}).get("namespace") != namespace:
                continue
            events.append(event)
        return events

    def is_ready(self) -> bool:
        """Every component runs (started from this state directory) and answers healthy."""
        if not self.kubeconfig.exists():
            return False
        return all(
            _running_pid(self.layout, name) is not None and _is_healthy(name, self.layout)
            for name in COMPONENTS
        )

    def up(self, *, real_node: bool = False) -> None:
        """Start what is not running; with `real_node`, also the real node (devenv.node)."""
        toolchain.ensure()
        for directory in (self.layout.logs, self.layout.pids):
            directory.mkdir(parents=True, exist_ok=True)
        certs = pki.ensure_pki(self.layout.pki)
        self.layout.audit_policy.write_text(json.dumps(AUDIT_POLICY, indent=2))
        _write_kubeconfig(self.kubeconfig, certs.ca.cert, certs.admin, "admin")
        for user, client in (
            ("controller-manager", certs.controller_manager),
            ("scheduler", certs.scheduler),
            ("kwok", certs.kwok),
            ("operator", certs.operator),
        ):
            _write_kubeconfig(self.layout.component_kubeconfig(user), certs.ca.cert, client, user)
        for component in _components(self.layout, certs):
            self._start(component)
        self._ensure_fake_nodes()
        if real_node:
            self.start_real_node()

    def start_real_node(self) -> None:
        """The real node (containerd, runc, kubelet in a network namespace of its own), Ready."""
        certs = pki.ensure_pki(self.layout.pki)
        admin = [str(_binary("kubectl")), f"--kubeconfig={self.kubeconfig}"]
        node.start(self.layout.root, certs, APISERVER_PORT, admin)

    def stop_real_node(self) -> None:
        """Stop the real node and remove its Node object; the control plane and kwok nodes stay."""
        node.stop(self.layout.root)
        self.kubectl("delete", "node", node.NODE_NAME, "--ignore-not-found", "--wait=false")

    def _start(self, component: Component) -> None:
        log = self.layout.log(component.name)
        process: subprocess.Popen[bytes] | None = None
        if _running_pid(self.layout, component.name) is None:
            port = int(HEALTH_URLS[component.name].split(":")[2].split("/")[0])
            if _is_listening(port):
                raise ClusterError(
                    f"port {port} of {component.name} is taken by a process this cluster did not start "
                    f"(another cluster from a different checkout?); stop it, or run `make cluster-down` there"
                )
            with log.open("ab") as output:
                process = subprocess.Popen(
                    [str(_binary(component.name)), *component.args],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=self.layout.root,
                )
            self.layout.pid(component.name).write_text(str(process.pid))
            print(f"started {component.name} (pid {process.pid}), log: {log}", flush=True)

        def healthy() -> bool:
            exited = (
                process.poll() is not None if process else _running_pid(self.layout, component.name) is None
            )
            if exited:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise ClusterError(f"{component.name} exited; the end of {log}:\n{tail}")
            return _is_healthy(component.name, self.layout)

        _wait_until(healthy, component.name, STARTUP_TIMEOUT_SECONDS, log)

    def kill(self, name: str) -> None:
        """SIGKILL one control-plane component, as a crash or an OOM kill would; `restart` brings it back."""
        pid = _running_pid(self.layout, name)
        if pid is None:
            raise ClusterError(f"{name} is not running")
        os.kill(pid, signal.SIGKILL)
        _wait_until(lambda: _running_pid(self.layout, name) is None, f"{name} gone", 15)

    def restart(self, name: str) -> None:
        """Start one component again with its usual arguments, and wait until it answers healthy."""
        certs = pki.ensure_pki(self.layout.pki)
        [component] = [c for c in _components(self.layout, certs) if c.name == name]
        self._start(component)

    def freeze(self, name: str) -> None:
        """SIGSTOP one component: its sockets stay open, nothing answers (a hung process) until `thaw`."""
        pid = _running_pid(self.layout, name)
        if pid is None:
            raise ClusterError(f"{name} is not running")
        os.kill(pid, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        """SIGCONT a frozen component, and wait until it answers healthy again."""
        pid = _running_pid(self.layout, name)
        if pid is None:
            raise ClusterError(f"{name} is not running")
        os.kill(pid, signal.SIGCONT)
        _wait_until(
            lambda: _is_healthy(name, self.layout), name, STARTUP_TIMEOUT_SECONDS, self.layout.log(name)
        )

    def is_healthy(self, name: str) -> bool:
        return _is_healthy(name, self.layout)

    def ensure_fake_nodes(self, count: int) -> None:
        """At least `count` fake nodes (kwok-node-0 ... kwok-node-{count-1}), all Ready."""
        names = [f"kwok-node-{index}" for index in range(count)]
        nodes = {"apiVersion": "v1", "kind": "List", "items": [_fake_node(name) for name in names]}
        self.kubectl("apply", "-f", "-", input_text=json.dumps(nodes))
        self.kubectl("wait", "--for=condition=Ready", "--timeout=120s", *(f"node/{name}" for name in names))

    def _ensure_fake_nodes(self) -> None:
        self.ensure_fake_nodes(len(FAKE_NODES))
        # Pods need their namespace's default ServiceAccount, which the controller-manager creates.
        _wait_until(
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            "default ServiceAccount",
            STARTUP_TIMEOUT_SECONDS,
            self.layout.log("kube-controller-manager"),
        )

    def down(self) -> None:
        """Stop the processes this module started, last started first, then remove all state."""
        if not self.layout.root.exists():
            return
        node.stop(self.layout.root)
        for name in reversed(COMPONENTS):
            pid = _running_pid(self.layout, name)
            if pid is not None:
                _stop(pid)
                print(f"stopped {name} (pid {pid})", flush=True)
        shutil.rmtree(self.layout.root)

    def status(self) -> list[tuple[str, str]]:
        rows = []
        for name in COMPONENTS:
            pid = _running_pid(self.layout, name)
            if pid is None:
                rows.append((name, "stopped"))
            else:
                health = "healthy" if _is_healthy(name, self.layout) else "unhealthy"
                rows.append((name, f"pid {pid}, {health}, log {self.layout.log(name)}"))
        return rows


def _stop(pid: int, grace_seconds: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


PODS_PER_FAKE_NODE = 250


def _fake_node(name: str) -> dict[str, Any]:
    capacity = {"cpu": "32", "memory": "256Gi", "pods": str(PODS_PER_FAKE_NODE), "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node-role.kubernetes.io/worker": "",
                "type": "kwok",
            },
        },
        "status": {"allocatable": capacity, "capacity": capacity},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--real-node", action="store_true", help="also start the real node (containerd, runc, kubelet)"
    )
    args = parser.parse_args(argv)
    cluster = Cluster()
    if args.action == "up":
        started = time.monotonic()
        cluster.up(real_node=args.real_node)
        print(f"cluster ready in {time.monotonic() - started:.1f}s")
        print(f"kubeconfig: {cluster.kubeconfig}")
        print(f"logs:       {cluster.layout.logs}/")
        print(f"kubectl:    {toolchain.binaries()['kubectl'].path}")
        print(cluster.kubectl("get", "nodes", "-o", "wide").stdout)
    elif args.action == "down":
        cluster.down()
    else:
        for name, state in cluster.status():
            print(f"{name:<24} {state}")
        real_node = "running" if node.is_running(cluster.layout.root) else "stopped"
        print(f"{'real node':<24} {real_node}, logs {cluster.layout.logs}/{{containerd,kubelet}}.log")
        if cluster.kubeconfig.exists():
            nodes = cluster.kubectl("get", "nodes", check=False)
            print(nodes.stdout or nodes.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ClusterError, node.NodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
