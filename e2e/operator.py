"""Run the workerfleet operator as a real process against the local cluster, for e2e tests."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from e2e.cluster import REPOSITORY, Cluster
from e2e.waiting import eventually

OPERATOR_USER = "workerfleet-operator"
LIVENESS_PORT = 18080
CRD_NAMES = ("workerpools.workerfleet.dev", "jobtypes.workerfleet.dev")


def install_crds(cluster: Cluster) -> None:
    """Apply the committed CRDs and wait until the API server serves them."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPOSITORY / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{name}" for name in CRD_NAMES)
    )


def _alive(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310  (loopback only)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_operator(cluster: Cluster, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`workerfleet run`, as its own user, until the block ends; then SIGTERM (SIGKILL after 15 s)."""
    liveness = f"http://127.0.0.1:{LIVENESS_PORT}/healthz"
    environment = {**os.environ, "KUBECONFIG": str(cluster.layout.component_kubeconfig("operator"))}
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "workerfleet.cli.main", "run", "--standalone", f"--liveness={liveness}"],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        eventually(
            lambda: process.poll() is None and _alive(liveness),
            what=f"the operator to answer {liveness} (log: {log})",
            timeout=60,
        )
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
