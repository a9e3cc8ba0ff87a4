"""Run the workerfleet operator as a real process against the local cluster, for e2e tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devenv import chart, toolchain
from devenv.cluster import REPOSITORY, Cluster, port_offset
from devenv.pki import Authority, Pair
from devenv.waiting import eventually

LIVENESS_PORT = 18080 + port_offset()
METRICS_API_PORT = 16443 + port_offset()
METRICS_PORT = 19090 + port_offset()
METRICS_API_SERVICE = ("workerfleet-system", "workerfleet-metrics-api-on-host")
CRD_NAMES = ("workerpools.workerfleet.dev", "jobtypes.workerfleet.dev")


def install_crds(cluster: Cluster) -> None:
    """Apply the committed CRDs, and KEDA's (so KEDA-mode pools are checked against its schema),
    and wait until the API server serves them."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPOSITORY / "crds"))
    for path in toolchain.keda_crd_paths():
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    names = [*CRD_NAMES, "scaledobjects.keda.sh", "triggerauthentications.keda.sh"]
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{name}" for name in names)
    )


METRICS_API_CA = "metrics-api-ca"


def metrics_api_certificate(cluster: Cluster, authority: str = METRICS_API_CA) -> tuple[Pair, Pair]:
    """A CA of the metrics API's own and a serving certificate it signed for the Service's name, as
    the chart makes them: (CA, serving pair). The aggregator verifies the name service.namespace.svc."""
    namespace, service = METRICS_API_SERVICE
    issuer = Authority(cluster.layout.pki, authority)
    serving = issuer.issue(
        f"{authority}-serving",
        f"{service}.{namespace}.svc",
        server_names=(f"{service}.{namespace}.svc", "localhost"),
        server_ips=("127.0.0.1",),
    )
    return issuer.pair, serving


SECOND_REPLICA_PORT_SHIFT = 150
"""The port shift of a second operator process next to the first (peering and upgrade tests)."""


def register_metrics_api(cluster: Cluster) -> None:
    """The Service the operator registers external.metrics.k8s.io to (it applies the APIService itself
    while it is the active replica, and removes it when the last replica stops).

    The aggregator reaches an APIService through a Service; Endpoints may not hold loopback addresses,
    so an ExternalName Service names localhost instead, with a port for each process that may serve
    (the active one names its own port in the APIService: "the endpoint follows the active replica").
    """
    namespace, service = METRICS_API_SERVICE
    ports = (METRICS_API_PORT, METRICS_API_PORT + SECOND_REPLICA_PORT_SHIFT)
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service, "namespace": namespace},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": f"https-{port}", "port": port} for port in ports],
            },
        },
    ]
    cluster.kubectl(
        "apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
    )


def unregister_metrics_api(cluster: Cluster) -> None:
    """Take away what `register_metrics_api` made, and an APIService a killed operator left, so that
    discovery does not wait on a server that is gone."""
    namespace, service = METRICS_API_SERVICE
    cluster.kubectl("delete", "apiservice", "v1beta1.external.metrics.k8s.io", "--ignore-not-found")
    cluster.kubectl("delete", "service", service, "-n", namespace, "--ignore-not-found")


@dataclass(frozen=True)
class Peering:
    """How one operator process takes part in kopf peering."""

    identity: str
    priority: int
    name: str = "workerfleet"
    lifetime_seconds: int = 10


def _alive(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310  (loopback only)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class OperatorProcess:
    """`workerfleet run` as the kubeconfig's user; can be killed and started again, as a crashed pod
    would be. By default it runs as a user of its own in system:masters (for the benchmark); the e2e
    suite uses the chart's identity (`operator_as_chart_identity`)."""

    def __init__(
        self,
        cluster: Cluster,
        log: Path,
        kubeconfig: Path | None = None,
        *,
        peering: Peering | None = None,
        port_shift: int = 0,
        pod: tuple[str, str] | None = None,
        pod_selector: str | None = None,
        extra_args: Sequence[str] = (),
        register: bool = True,
        serve_metrics_api: bool = True,
    ) -> None:
        """`peering`: run as one of several peering replicas instead of standalone. `port_shift`: moved
        ports, so a second process can run next to the first (the APIService targets the unshifted one).
        `pod`: (namespace, name) of a pod this process stands in for, as the chart's container would:
        it gets POD_NAMESPACE and POD_NAME and labels that pod while active (--label-active-pod).
        `pod_selector`: the chart's --active-pod-selector, so that on turning active it takes the label
        off the other pods it selects. `extra_args`: more options of `workerfleet run`. `register`: register
        the metrics APIService while active (routed to `register_metrics_api`'s Service; standalone, the
        start waits until it is registered and Available). `serve_metrics_api`: False serves no metrics
        API at all, as the chart's operator with metricsApi.enabled=false (implies no registering)."""
        self.cluster = cluster
        self.log = log
        self.kubeconfig = kubeconfig or cluster.layout.component_kubeconfig("operator")
        self.peering = peering
        self.pod = pod
        self.pod_selector = pod_selector
        self.extra_args = list(extra_args)
        self.register = register and serve_metrics_api
        self.serve_metrics_api = serve_metrics_api
        self.liveness_port = LIVENESS_PORT + port_shift
        self.metrics_api_port = METRICS_API_PORT + port_shift
        self.metrics_port = METRICS_PORT + port_shift
        self._process: subprocess.Popen[bytes] | None = None

    def _mode_args(self) -> list[str]:
        if self.peering is None:
            return ["--standalone"]
        return [
            f"--peering={self.peering.name}",
            f"--priority={self.peering.priority}",
            f"--peering-lifetime={self.peering.lifetime_seconds}",
            f"--identity={self.peering.identity}",
        ]

    def _admission_args(self) -> list[str]:
        """The chart's policies when the caller names them (the chart's identity); otherwise the
        operator serves pools unchecked, as on a development cluster without the chart."""
        if any(arg.startswith("--admission-policy=") for arg in self.extra_args):
            return []
        return ["--no-admission-policy"]

    def _pod_args(self) -> list[str]:
        if self.pod is None:
            return []
        selector = [] if self.pod_selector is None else [f"--active-pod-selector={self.pod_selector}"]
        return ["--label-active-pod", *selector]

    def _registration_args(self) -> list[str]:
        """Register the APIService while active, routed to the ExternalName Service, on this process's port,
        trusting the CA that signed its certificate (as the chart's flags do with its Service)."""
        if not self.register:
            return []
        namespace, service = METRICS_API_SERVICE
        ca, _ = metrics_api_certificate(self.cluster)
        return [
            f"--register-metrics-api={namespace}/{service}",
            f"--metrics-api-service-port={self.metrics_api_port}",
            f"--metrics-api-ca-file={ca.cert}",
        ]

    def _metrics_api_args(self) -> list[str]:
        if not self.serve_metrics_api:
            return []
        _, serving = metrics_api_certificate(self.cluster)
        return [
            f"--metrics-api-port={self.metrics_api_port}",
            "--metrics-api-address=127.0.0.1",
            f"--metrics-api-cert={serving.cert}",
            f"--metrics-api-key={serving.key}",
        ]

    def _environment(self) -> dict[str, str]:
        environment = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        for variable in ("POD_NAMESPACE", "POD_NAME"):
            environment.pop(variable, None)  # never the pod of whoever runs the tests
        if self.pod is not None:
            environment["POD_NAMESPACE"], environment["POD_NAME"] = self.pod
        return environment

    def start(self, *, wait_registered: bool = True) -> None:
        """Start the process and wait until it answers; standalone and registering, also until the
        APIService routes to it, unless `wait_registered` is False (a test that expects it not to)."""
        liveness = f"http://127.0.0.1:{self.liveness_port}/healthz"
        environment = self._environment()
        with self.log.open("ab") as output:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workerfleet.cli.main",
                    "run",
                    *self._mode_args(),
                    *self._pod_args(),
                    *self._registration_args(),
                    *self._admission_args(),
                    *self.extra_args,
                    f"--liveness={liveness}",
                    *self._metrics_api_args(),
                    f"--metrics-port={self.metrics_port}",
                    "--metrics-address=127.0.0.1",
                ],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self._process = process
        eventually(
            lambda: process.poll() is None and _alive(liveness),
            what=f"the operator to answer {liveness} (log: {self.log})",
            timeout=60,
        )
        if self.peering is None and self.register and wait_registered:
            # Standalone, it is active at once and registers the APIService within seconds.
            eventually(
                self._registered_here,
                what="the APIService registered to this process's port",
                timeout=60,
            )
            self.cluster.kubectl(
                "wait",
                "--for=condition=Available",
                "apiservice/v1beta1.external.metrics.k8s.io",
                "--timeout=60s",
            )

    def _registered_here(self) -> bool:
        result = self.cluster.kubectl(
            "get",
            "apiservice",
            "v1beta1.external.metrics.k8s.io",
            "-o",
            "jsonpath={.spec.service.port}",
            check=False,
        )
        return result.returncode == 0 and result.stdout.strip() == str(self.metrics_api_port)

    def is_active(self) -> bool | None:
        """What the process reports in workerfleet_operator_active; None when it does not answer."""
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        for line in text.splitlines():
            if line.startswith("workerfleet_operator_active "):
                return float(line.split()[1]) == 1.0
        return None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def exit_code(self) -> int | None:
        """The exit status once the process ended by itself; None while it runs or when never started."""
        return self._process.poll() if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers run, like an OOM-killed or evicted operator pod."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=15)
            self._process = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self._process is None:
            return
        process, self._process = self._process, None
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def stop_together(processes: Sequence[OperatorProcess]) -> None:
    """SIGTERM to every process at once (a scale to 0, `helm uninstall`); then wait for each, as `stop`."""
    running = [(process, process._process) for process in processes if process._process is not None]
    for process, child in running:
        process._process = None
        child.terminate()
    for _, child in running:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=5)


@contextmanager
def running_operator(
    cluster: Cluster, log: Path, kubeconfig: Path | None = None, extra_args: tuple[str, ...] = ()
) -> Iterator[OperatorProcess]:
    """The operator running until the block ends; then SIGTERM (SIGKILL after 15 s)."""
    process = OperatorProcess(cluster, log, kubeconfig, extra_args=extra_args)
    try:
        process.start()
        yield process
    finally:
        process.stop()


@contextmanager
def operator_as_chart_identity(cluster: Cluster, log: Path) -> Iterator[OperatorProcess]:
    """The operator on this host with a token of the installed chart's ServiceAccount.

    The chart's own pod is simulated and runs nothing; this process stands in for it with exactly
    its identity, and serves the metrics API in its place.
    """
    kubeconfig = chart.service_account_kubeconfig(
        cluster, cluster.layout.component_kubeconfig("chart-operator")
    )
    register_metrics_api(cluster)
    with running_operator(cluster, log, kubeconfig, chart.operator_args(chart.E2E_VALUES)) as process:
        yield process
