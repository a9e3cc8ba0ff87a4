"""Starts and stops the external metrics API inside the operator process."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from workerfleet.adapter.certificates import ReloadingCertificate, watch, write_self_signed
from workerfleet.adapter.readings import Readings
from workerfleet.adapter.server import (
    FrontProxy,
    FrontProxyTrust,
    build_app,
    kube_authorizer,
    serve,
    server_tls,
)
from workerfleet.handlers.activity import ACTIVITY
from workerfleet.kube.client import kube
from workerfleet.kube.rest import ApiError

logger = logging.getLogger(__name__)

FRONT_PROXY_CHECK_SECONDS = 60.0
"""How often the aggregator's client CA is read again: a rotated front-proxy CA is trusted within this."""
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
    front_proxy = FrontProxy(trust, tls)
    app = build_app(READINGS, front_proxy, kube_authorizer(client), ready=ACTIVITY.is_active)
    memo["metrics_api_runner"] = await serve(app, settings.address, settings.port, tls)
    tasks = [asyncio.create_task(_follow_front_proxy(front_proxy))]
    if given:
        # A renewed Secret reaches the mounted files: serve it without a restart.
        tasks.append(asyncio.create_task(watch(ReloadingCertificate(tls, cert_file, key_file))))
    memo["metrics_api_watches"] = tasks


async def _follow_front_proxy(front_proxy: FrontProxy) -> None:
    """Read the aggregator's client CA and names again every minute, until cancelled."""
    while True:
        await asyncio.sleep(FRONT_PROXY_CHECK_SECONDS)
        try:
            client_ca, allowed_names = await asyncio.to_thread(kube().front_proxy_trust)
        except (LookupError, KeyError, OSError, ApiError) as error:
            logger.warning("front-proxy trust not read again (%s); keeping the one in use", error)
            continue
        if front_proxy.update(
            FrontProxyTrust(client_ca_pem=client_ca, allowed_names=frozenset(allowed_names))
        ):
            logger.info("front-proxy trust updated from kube-system/extension-apiserver-authentication")


@kopf.on.cleanup()
async def stop_metrics_api(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("metrics_api_watches", []):
        task.cancel()
    runner = memo.get("metrics_api_runner")
    if runner is not None:
        await runner.cleanup()
