"""A real node beside the kwok ones: containerd 2 + runc + kubelet, its pods in a network namespace.

Everything of the node lives in one network namespace the dev environment creates and deletes
(`workerfleet-node-<port offset>`): kubelet and containerd run in it (their mount namespace stays
the host's), the CNI bridge and every pod address are inside it. The namespace's loopback holds
two addresses: the node's (NODE_IP) and the `kubernetes` Service's
(10.96.0.1), where a forwarder (devenv.netns_forward) passes connections to the API server on the
host's loopback, so kubelet and in-cluster clients reach it as on any cluster. Queue servers a test
starts on loopback are forwarded the same way (`forwarded`).

The other way, from the host into the node, goes over one veth pair (`wfn<port offset>` on the host,
a /30 of VETH_NETWORK between the two ends), with two kinds of host route over it: the node's pod
subnet (a /20 of POD_NETWORK per checkout), so a Prometheus on the host scrapes worker pods; and,
from devenv.service_proxy, each ClusterIP of the node's Services (/32), so the API server's aggregator
reaches an operator pod's metrics API at its Service. The veth, and every route over it, goes with
the node. Nothing else of the host's addresses, routes or firewall rules is touched.

The node is tainted (TAINT_KEY, NoSchedule): the kwok-simulated pods of the rest of the suite never
land on it; what should run here tolerates the taint and selects the node by its label.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from devenv import images, netns_forward, pki, toolchain

NODE_NAME = pki.REAL_NODE_NAME
NODE_IP = "10.250.0.1"
POD_NETWORK = "10.88.0.0/13"
"""Each checkout's node takes a /20 of it for its pods (offset 0: 10.88.0.0/20, 100: 10.88.16.0/20)."""
TAINT_KEY = "workerfleet.dev/real-node"
"""The node's taint and label: pods tolerate the one and select the other to run here."""
NODE_LABEL = TAINT_KEY
API_SERVICE_PORT = 443
VETH_NETWORK = "10.251.0.0/16"
"""Each checkout's host-to-node veth takes a /30 of it (offset 100: 10.251.0.4/30)."""
READY_TIMEOUT_SECONDS = 120.0
STOP_GRACE_SECONDS = 20.0
KUBELET_EXIT_CHECKS = 3
RUNC = "/usr/sbin/runc"
CNI_PLUGINS = "/usr/lib/cni"
CNI_RESULT_CACHE = "/var/lib/cni/results"
# kubelet sets these host-wide at start; `stop` puts back the values it found.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")


class NodeError(RuntimeError):
    """The real node did not come up; the message names the log to read."""


def namespace_name() -> str:
    return f"workerfleet-node-{_port_offset()}"


def namespace_path() -> Path:
    return Path("/run/netns") / namespace_name()


def _port_offset() -> int:
    return int(os.environ.get("WORKERFLEET_PORT_OFFSET", "0"))


@dataclass(frozen=True)
class NodeNetwork:
    """The node's addresses that differ per checkout: the pods' subnet, and the veth pair from the
    host into the namespace (two interface names, its /30's two addresses)."""

    pod_subnet: str
    host_name: str
    node_name: str
    host_address: str
    node_address: str


def network(offset: int) -> NodeNetwork:
    """One slot per port offset (0, 100, 200, ... take slots 0, 1, 2, ...): a /20 of POD_NETWORK
    and a /30 of VETH_NETWORK, so the nodes of several checkouts on one machine, and the host's
    routes to them, never overlap."""
    slot = offset // 100 if offset % 100 == 0 else offset
    pods = int(ipaddress.ip_network(POD_NETWORK).network_address) + 4096 * (slot % 128)
    veth = int(ipaddress.ip_network(VETH_NETWORK).network_address) + 4 * (slot % 16384)
    return NodeNetwork(
        pod_subnet=f"{ipaddress.IPv4Address(pods)}/20",
        host_name=f"wfn{offset}"[:15],
        node_name="wfhost",
        host_address=str(ipaddress.IPv4Address(veth + 1)),
        node_address=str(ipaddress.IPv4Address(veth + 2)),
    )


def own_network() -> NodeNetwork:
    return network(_port_offset())


@dataclass(frozen=True)
class NodeLayout:
    """Where the node's state lives: under the cluster's, so `cluster down` removes it too."""

    cluster_root: Path

    @property
    def root(self) -> Path:
        return self.cluster_root / "node"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    def file(self, name: str) -> Path:
        return self.root / name

    def log(self, name: str) -> Path:
        return self.cluster_root / "logs" / f"{name}.log"

    def pid(self, name: str) -> Path:
        return self.cluster_root / "pids" / f"{name}.pid"


def containerd_config(layout: NodeLayout) -> str:
    root = layout.root
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    return f"""version = 3
root = "{root}/containerd/root"
state = "{root}/containerd/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{images.PAUSE_IMAGE}"

[{cri_runtime}]
  # This machine withholds CAP_SYS_RESOURCE, so no process may lower its oom_score_adj: runc fails
  # "failed to update /proc/self/oom_score_adj: Permission denied" on the sandbox's -998. Clamp every
  # container's value to containerd's own instead (what rootless setups do).
  restrict_oom_score_adj = true
  # Pods' network namespaces are mounted under the state directory, not /run/netns: `stop`
  # unmounts them with the rest, so none outlives the node.
  netns_mounts_under_state_dir = true
  [{cri_runtime}.cni]
    bin_dirs = ["{CNI_PLUGINS}"]
    conf_dir = "{root}/cni"
  [{cri_runtime}.containerd]
    default_runtime_name = "runc"
    [{cri_runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri_runtime}.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{root}/runc"
        SystemdCgroup = false
"""


def cni_config(layout: NodeLayout) -> dict[str, object]:
    """A bridge in the node's namespace; addresses and results kept under the node's state."""
    return {
        "cniVersion": "1.0.0",
        "name": "workerfleet",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "wf0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.root / "cni-ipam"),
                    "ranges": [[{"subnet": own_network().pod_subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }


def kubelet_config(layout: NodeLayout, client_ca: Path) -> dict[str, object]:
    endpoint = f"unix://{layout.containerd_socket}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine has cgroup v1; kubelet 1.35+ refuses it unless told, then warns and runs.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "address": NODE_IP,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        "failSwapOn": False,
        "podLogsDir": str(layout.pod_logs),
        "resolvConf": str(layout.file("resolv.conf")),
        # A shared disk: never evict for its fill level, never collect the imported images.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "maxPods": 30,
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
    }


def _kubeconfig(ca: Path, client: pki.Pair) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "workerfleet",
                "cluster": {
                    "server": f"https://{pki.KUBERNETES_SERVICE_IP}:{API_SERVICE_PORT}",
                    "certificate-authority": str(ca),
                },
            }
        ],
        "users": [
            {
                "name": NODE_NAME,
                "user": {"client-certificate": str(client.cert), "client-key": str(client.key)},
            }
        ],
        "contexts": [{"name": "node", "context": {"cluster": "workerfleet", "user": NODE_NAME}}],
        "current-context": "node",
    }


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=120)


def ensure_namespace() -> None:
    """The node's network namespace, its loopback up and holding the node's and the API Service's
    addresses (pods reach them over the CNI bridge; this kernel has no dummy interfaces), and the
    veth pair from the host into it."""
    name = namespace_name()
    if not namespace_path().exists():
        _run("ip", "netns", "add", name)
    _run("ip", "-n", name, "link", "set", "lo", "up")
    for address in (NODE_IP, pki.KUBERNETES_SERVICE_IP):
        _run("ip", "-n", name, "address", "replace", f"{address}/32", "dev", "lo")
    pair = own_network()
    if not Path("/sys/class/net", pair.host_name).exists():
        _run(
            "ip", "link", "add", pair.host_name, "type", "veth", "peer", "name", pair.node_name, "netns", name
        )
    _run("ip", "address", "replace", f"{pair.host_address}/30", "dev", pair.host_name)
    _run("ip", "-n", name, "address", "replace", f"{pair.node_address}/30", "dev", pair.node_name)
    _run("ip", "link", "set", pair.host_name, "up")
    _run("ip", "-n", name, "link", "set", pair.node_name, "up")
    # The pods' subnet from the host: a scrape of a worker pod's metrics, say. The namespace forwards
    # between the veth and the pods' bridge; replies go back over the veth (its /30 is connected).
    _run("nsenter", f"--net={namespace_path()}", "--", "sysctl", "-qw", "net.ipv4.ip_forward=1")
    _run("ip", "route", "replace", pair.pod_subnet, "via", pair.node_address, "dev", pair.host_name)


def _alive(layout: NodeLayout, name: str, marker: str) -> int | None:
    """The recorded pid of a node process, if it still runs and its command line holds `marker`."""
    pid_file = layout.pid(name)
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text())
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return None
    return pid if marker in command_line and state != "Z" else None


def _start(layout: NodeLayout, name: str, command: list[str], env: dict[str, str] | None = None) -> int:
    log = layout.log(name)
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=layout.root,
            env=env,
        )
    layout.pid(name).write_text(str(process.pid))
    print(f"started {name} (pid {process.pid}), log: {log}", flush=True)
    return process.pid


def _in_namespace(command: list[str]) -> list[str]:
    """Run in the node's network namespace only; the mount namespace stays the host's, so kubelet's
    volume mounts are seen by containerd and runc."""
    return ["nsenter", f"--net={namespace_path()}", "--", *command]


def _wait(
    predicate: Callable[[], bool], what: str, log: Path, timeout: float = READY_TIMEOUT_SECONDS
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
    raise NodeError(f"{what} not ready after {timeout:.0f}s; the end of {log}:\n{tail}")


def _ctr(layout: NodeLayout, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    ctr = str(toolchain.binaries()["ctr"].path)
    return _run(ctr, f"--address={layout.containerd_socket}", "--namespace=k8s.io", *args, check=check)


def _record_sysctls(layout: NodeLayout) -> None:
    saved = layout.file("sysctls.json")
    if not saved.exists():
        values = {key: Path("/proc/sys", key).read_text().strip() for key in KUBELET_SYSCTLS}
        saved.write_text(json.dumps(values))


def _restore_sysctls(layout: NodeLayout) -> None:
    saved = layout.file("sysctls.json")
    if saved.exists():
        for key, value in json.loads(saved.read_text()).items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", key).write_text(value)


def start(cluster_root: Path, certs: pki.ClusterPki, apiserver_port: int, kubectl: list[str]) -> None:
    """Bring the node up (idempotent): namespace, forwarder, containerd with the images, kubelet; wait
    until the Node is Ready. `kubectl` is the admin's command line, used to wait."""
    layout = NodeLayout(cluster_root)
    for directory in (layout.root, layout.root / "cni", layout.pod_logs):
        directory.mkdir(parents=True, exist_ok=True)
    ensure_namespace()
    forward_rule = f"{pki.KUBERNETES_SERVICE_IP}:{API_SERVICE_PORT}=127.0.0.1:{apiserver_port}"
    if _alive(layout, "node-forwarder", "devenv.netns_forward") is None:
        command = [sys.executable, "-m", "devenv.netns_forward", str(namespace_path()), forward_rule]
        _start(layout, "node-forwarder", command, env={**os.environ, "PYTHONPATH": str(images.REPOSITORY)})
    if _alive(layout, "node-service-proxy", "devenv.service_proxy") is None:
        pair = own_network()
        command = [
            sys.executable,
            "-m",
            "devenv.service_proxy",
            str(namespace_path()),
            pair.host_name,
            pair.node_address,
            pair.pod_subnet,
            f"https://127.0.0.1:{apiserver_port}",
            str(certs.ca.cert),
            str(certs.admin.cert),
            str(certs.admin.key),
        ]
        environment = {**os.environ, "PYTHONPATH": str(images.REPOSITORY)}
        _start(layout, "node-service-proxy", command, env=environment)

    containerd = toolchain.binaries()["containerd"].path
    if _alive(layout, "containerd", str(containerd)) is None:
        layout.file("containerd.toml").write_text(containerd_config(layout))
        (layout.root / "cni" / "10-workerfleet.conflist").write_text(json.dumps(cni_config(layout), indent=2))
        shim_dir = toolchain.binaries()["containerd-shim-runc-v2"].path.parent
        env = {**os.environ, "PATH": f"{shim_dir}:{os.environ['PATH']}"}
        command = [str(containerd), f"--config={layout.file('containerd.toml')}"]
        _start(layout, "containerd", _in_namespace(command), env=env)
    _wait(
        lambda: _ctr(layout, "version", check=False).returncode == 0, "containerd", layout.log("containerd")
    )
    if images.PAUSE_IMAGE not in _ctr(layout, "images", "list", "--quiet").stdout.split():
        import_images(cluster_root)

    kubelet = toolchain.binaries()["kubelet"].path
    if _alive(layout, "kubelet", str(kubelet)) is None:
        _record_sysctls(layout)
        layout.file("resolv.conf").write_text("options ndots:1\n")
        layout.file("kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(layout, certs.ca.cert)))
        layout.file("kubelet.kubeconfig").write_text(json.dumps(_kubeconfig(certs.ca.cert, certs.real_node)))
        command = [
            str(kubelet),
            f"--config={layout.file('kubelet.yaml')}",
            f"--kubeconfig={layout.file('kubelet.kubeconfig')}",
            f"--root-dir={layout.root / 'kubelet'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={NODE_LABEL}=true",
        ]
        _start(layout, "kubelet", _in_namespace(command))

    misses: list[int] = []

    def ready() -> bool:
        # One miss may be a look at /proc mid-exec (nsenter becoming kubelet); three in a row are not.
        if _alive(layout, "kubelet", str(kubelet)) is None:
            misses.append(1)
            if len(misses) >= KUBELET_EXIT_CHECKS:
                raise NodeError(f"kubelet exited; see {layout.log('kubelet')}")
            return False
        misses.clear()
        result = subprocess.run(
            [
                *kubectl,
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        return result.stdout.strip() == "True"

    _wait(ready, f"node {NODE_NAME}", layout.log("kubelet"))


def import_images(cluster_root: Path) -> None:
    """Build the images (the base is cached) and import them into the node's containerd."""
    archive = images.build()
    _ctr(NodeLayout(cluster_root), "images", "import", "--all-platforms", str(archive))


@dataclass(frozen=True)
class ContainerProcess:
    """What the kernel says of a container's main process: who it runs as, how its root is mounted."""

    pid: int
    uid: int
    root_read_only: bool
    effective_capabilities: int
    no_new_privileges: bool
    seccomp_filtered: bool


def container_process(cluster_root: Path, container_id: str) -> ContainerProcess:
    """The running process of a container (its id from a pod's status, without `containerd://`)."""
    tasks = _ctr(NodeLayout(cluster_root), "tasks", "list").stdout.splitlines()[1:]
    [pid] = [int(fields[1]) for fields in (line.split() for line in tasks) if fields[0] == container_id]
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    uid = int(status["Uid"].split()[0])
    root_options = [
        line.split()[5].split(",")
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        if line.split()[4] == "/"
    ]
    return ContainerProcess(
        pid=pid,
        uid=uid,
        root_read_only="ro" in root_options[-1],
        effective_capabilities=int(status["CapEff"].strip(), 16),
        no_new_privileges=status["NoNewPrivs"].strip() == "1",
        seccomp_filtered=status["Seccomp"].strip() == "2",
    )


def http_get(address: tuple[str, int], path: str) -> tuple[int, str]:
    """GET over plain HTTP to an address inside the node's namespace (a pod's port)."""
    connection = http.client.HTTPConnection(*address, timeout=5)
    connection.sock = netns_forward.connect_in_namespace(namespace_path(), address)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def is_running(cluster_root: Path) -> bool:
    layout = NodeLayout(cluster_root)
    return _alive(layout, "kubelet", str(toolchain.binaries()["kubelet"].path)) is not None


def _stop_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _shims(layout: NodeLayout) -> Iterator[int]:
    """The runc shims this node's containerd started (they name its socket on their command line)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            command_line = (entry / "cmdline").read_bytes().decode(errors="replace")
            if "containerd-shim-runc-v2" in command_line and str(layout.containerd_socket) in command_line:
                yield int(entry.name)


def stop(cluster_root: Path) -> None:
    """Stop kubelet, every container, containerd, the forwarder and the Service proxy; unmount; delete
    the namespace and the veth into it."""
    layout = NodeLayout(cluster_root)
    if not layout.root.exists():
        return
    kubelet = _alive(layout, "kubelet", str(toolchain.binaries()["kubelet"].path))
    if kubelet is not None:
        _stop_pid(kubelet)
        print(f"stopped kubelet (pid {kubelet})", flush=True)
    containerd = _alive(layout, "containerd", str(toolchain.binaries()["containerd"].path))
    if containerd is not None:
        for container in _ctr(layout, "containers", "list", "--quiet", check=False).stdout.split():
            # The CNI library caches each sandbox's result on the host; teardown is skipped here.
            for cached in Path(CNI_RESULT_CACHE).glob(f"*-{container}-*"):
                cached.unlink(missing_ok=True)
        for task in _ctr(layout, "tasks", "list", "--quiet", check=False).stdout.split():
            _ctr(layout, "tasks", "kill", "--all", "--signal=SIGKILL", task, check=False)
            _ctr(layout, "tasks", "delete", "--force", task, check=False)
        _stop_pid(containerd)
        print(f"stopped containerd (pid {containerd})", flush=True)
    for shim in _shims(layout):
        _stop_pid(shim)
    forwarder = _alive(layout, "node-forwarder", "devenv.netns_forward")
    if forwarder is not None:
        _stop_pid(forwarder)
    service_proxy = _alive(layout, "node-service-proxy", "devenv.service_proxy")
    if service_proxy is not None:
        _stop_pid(service_proxy)
    for point in _mounts_under(layout.root):
        _run("umount", "--lazy", point, check=False)
    if namespace_path().exists():
        _run("ip", "netns", "delete", namespace_name(), check=False)
    # The namespace's end goes with it and takes the pair (and each route over it) along; in case not:
    _run("ip", "link", "delete", own_network().host_name, check=False)
    _restore_sysctls(layout)
    _remove_pod_cgroups()
    shutil.rmtree(layout.root, ignore_errors=True)


def _remove_pod_cgroups() -> None:
    """The kubelet's `kubepods` cgroups, deepest first; once their processes are gone they are empty."""
    for top in Path("/sys/fs/cgroup").glob("*/kubepods"):
        for directory in sorted(
            (path for path in top.rglob("*") if path.is_dir()), key=lambda p: -len(p.parts)
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


@contextlib.contextmanager
def forwarded(cluster_root: Path, node_port: int, loopback_port: int) -> Iterator[str]:
    """Connections to NODE_IP:node_port inside the node's namespace reach 127.0.0.1:loopback_port;
    yields the address pods use. The forwarder is stopped on exit."""
    layout = NodeLayout(cluster_root)
    rule = f"{NODE_IP}:{node_port}=127.0.0.1:{loopback_port}"
    log = layout.log(f"forwarder-{node_port}")
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "devenv.netns_forward", str(namespace_path()), rule],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(images.REPOSITORY)},
        )
    try:
        _wait(
            lambda: "forwarding" in log.read_text(errors="replace"), f"forwarder to {loopback_port}", log, 30
        )
        yield f"{NODE_IP}:{node_port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
