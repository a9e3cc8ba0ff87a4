"""A real Prometheus from Debian's packages, on a loopback port with its data in a temp dir,
scraping the worker processes a test starts (file-based discovery, so targets come and go)."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from e2e.waiting import eventually
from e2e.worker.servers import START_TIMEOUT_SECONDS, _stop_group, free_port

SCRAPE_INTERVAL_SECONDS = 1


class PrometheusServer:
    """`prometheus` scraping every 1 s the targets listed with `set_targets`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self._targets_file = directory / "targets.json"
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
            "scrape_configs": [
                {
                    "job_name": "workers",
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

    def set_targets(self, ports: list[int]) -> None:
        """Scrape exactly these loopback ports (written atomically, as file discovery expects)."""
        staged = self._targets_file.with_suffix(".tmp")
        staged.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}" for port in ports]}]))
        staged.replace(self._targets_file)

    def query(self, promql: str) -> float | None:
        """The single value of an instant query, or None for an empty result."""
        url = f"{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  (loopback only)
            body: dict[str, Any] = json.loads(response.read())
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def up_targets(self) -> int:
        """Targets whose last scrape succeeded."""
        return int(self.query('count(up{job="workers"} == 1)') or 0)

    def stop(self) -> None:
        if self._process is not None:
            _stop_group(self._process)
            self._process = None
