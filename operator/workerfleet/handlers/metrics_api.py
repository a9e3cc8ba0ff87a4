"""Starts and stops the external metrics API inside the operator process."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from workerfleet.adapter.certificates import ReloadingCertificate, watch, write_self_signed
from workerfleet.adapter.readings import Readings
from workerfleet.adapter.server import FrontProxyTrust, build_app, kube_authorizer, serve, server_tls
from workerfleet.handlers.activity import ACTIVITY
from workerfleet.kube.client import kube

READINGS = Readings()
"""Queue depths the pollers record and the metrics API serves; one per operator process."""


@dataclass(frozen=True)
class MetricsApiSettings:
    """Where the metrics API listens, and with which serving certificate (self-signed if none)."""

    address: str = "0.0.0.0"  # noqa: S104  (inside a pod, the Service reaches it on the pod IP)
    port: int = 0
    cert_file: str | None = None
    key_file: str | None = None
    service_names: tuple[str, ...] = ("workerfleet-metrics.workerfleet-system.svc",)


@kopf.on.startup()
async def start_metrics_api(memo: kopf.Memo, **_: Any) -> None:
    settings: MetricsApiSettings = memo.get("metrics_api", MetricsApiSettings())
    if not settings.port:
        return
    client = kube()
    client_ca, allowed_names = await asyncio.to_thread(client.front_proxy_trust)
    trust = FrontProxyTrust(client_ca_pem=client_ca, allowed_names=frozenset(allowed_names))
    given = bool(settings.cert_file and settings.key_file)
    if settings.cert_file and settings.key_file:
        cert_file, key_file = settings.cert_file, settings.key_file
    else:
        directory = Path(tempfile.mkdtemp(prefix="workerfleet-metrics-"))
        names = [*settings.service_names, "localhost"]
        cert, key = write_self_signed(directory, names, ["127.0.0.1"])
        cert_file, key_file = str(cert), str(key)
    tls = server_tls(cert_file, key_file, trust)
    app = build_app(READINGS, trust, kube_authorizer(client), ready=ACTIVITY.is_active)
    memo["metrics_api_runner"] = await serve(app, settings.address, settings.port, tls)
    if given:
        # A renewed Secret reaches the mounted files: serve it without a restart.
        memo["metrics_api_certificate_watch"] = asyncio.create_task(
            watch(ReloadingCertificate(tls, cert_file, key_file))
        )


@kopf.on.cleanup()
async def stop_metrics_api(memo: kopf.Memo, **_: Any) -> None:
    watcher = memo.get("metrics_api_certificate_watch")
    if watcher is not None:
        watcher.cancel()
    runner = memo.get("metrics_api_runner")
    if runner is not None:
        await runner.cleanup()
