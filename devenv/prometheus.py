"""A real Prometheus from Debian's packages, on a loopback port with its data in a temp dir,
scraping the processes a test or the demo starts (file-based discovery, so targets come and go).

Prometheus refuses to start on a rule file it cannot parse, so loading the chart's alerts checks them.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devenv.servers import START_TIMEOUT_SECONDS, _stop_group, free_port
from devenv.waiting import eventually

SCRAPE_INTERVAL_SECONDS = 1


class PrometheusServer:
    """`prometheus` scraping every 1 s the targets listed with `set_targets`, with the given rules."""

    def __init__(
        self, directory: Path, rule_files: Sequence[Path] = (), *, honor_labels: bool = False
    ) -> None:
        self.directory = directory
        self.honor_labels = honor_labels
        self.port = free_port()
        self._targets_file = directory / "targets.json"
        self._rule_files = list(rule_files)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.set_targets([])
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
            },
            "rule_files": [str(path) for path in self._rule_files],
            "scrape_configs": [
                {
                    "job_name": "workers",
                    "honor_labels": self.honor_labels,
                    "file_sd_configs": [{"files": [str(self._targets_file)], "refresh_interval": "1s"}],
                }
            ],
        }
        (self.directory / "prometheus.yml").write_text(json.dumps(config))
        log = (self.directory / "prometheus.log").open("ab")
        self._process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        eventually(self._ready, what="prometheus to be ready", timeout=START_TIMEOUT_SECONDS)

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self._process.returncode}; see {self.directory}")
        try:
            with urllib.request.urlopen(f"{self.address}/-/ready", timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def set_targets(self, addresses: list[str], labels: dict[str, dict[str, str]] | None = None) -> None:
        """Scrape exactly these host:port addresses (written atomically, as file discovery expects),
        each with the target labels given for it (as Kubernetes discovery adds namespace and pod)."""
        labels = labels or {}
        staged = self._targets_file.with_suffix(".tmp")
        groups = [{"targets": [address], "labels": labels.get(address, {})} for address in sorted(addresses)]
        staged.write_text(json.dumps(groups))
        staged.replace(self._targets_file)

    def query_vector(self, promql: str) -> list[dict[str, Any]]:
        """The samples of an instant query."""
        url = f"{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  (loopback only)
            body: dict[str, Any] = json.loads(response.read())
        samples: list[dict[str, Any]] = body["data"]["result"]
        return samples

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """The series of a range query (Unix times), each with its `values`: what a dashboard panel draws."""
        parameters = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        url = f"{self.address}/api/v1/query_range?" + urllib.parse.urlencode(parameters)
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310  (loopback only)
            body: dict[str, Any] = json.loads(response.read())
        series: list[dict[str, Any]] = body["data"]["result"]
        return series

    def parse_error(self, promql: str) -> str | None:
        """Prometheus' error for an expression it cannot run (this version has no parse endpoint)."""
        url = f"{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  (loopback only)
                response.read()
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
            return f"{error.code}: {body.get('error', '')}"
        return None

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing now (GET /api/v1/alerts)."""
        with urllib.request.urlopen(f"{self.address}/api/v1/alerts", timeout=5) as response:  # noqa: S310
            body: dict[str, Any] = json.loads(response.read())
        alerts: list[dict[str, Any]] = body["data"]["alerts"]
        return alerts

    def query(self, promql: str) -> float | None:
        """The single value of an instant query, or None for an empty result."""
        result = self.query_vector(promql)
        return float(result[0]["value"][1]) if result else None

    def up_targets(self) -> int:
        """Targets whose last scrape succeeded."""
        return int(self.query('count(up{job="workers"} == 1)') or 0)

    def stop(self) -> None:
        if self._process is not None:
            _stop_group(self._process)
            self._process = None
