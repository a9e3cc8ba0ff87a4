"""Starts and stops the external metrics API inside the operator process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
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
from workerfleet.handlers.activity import ACTIVITY, PEERING_API_VERSION, PeeringSettings
from workerfleet.kube.client import Kube, kube
from workerfleet.kube.rest import ApiError
from workerfleet.planners import registration
from workerfleet.planners.registration import API_SERVICE_NAME, Owner, Target

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
    registration: RegistrationSettings | None = None
    """Register the APIService while this replica is active (None: someone else registers it)."""


@dataclass(frozen=True)
class RegistrationSettings:
    """Which Service the APIService routes to, which CA it trusts, and which object of the release owns it."""

    namespace: str
    service: str
    port: int = 443
    ca_file: str | None = None
    """The CA that signed the serving certificate (PEM); None: the self-signed certificate itself."""
    owner_cluster_role: str | None = None
    """The release's ClusterRole: the APIService's owner, so the GC removes it when the release goes."""


REGISTER_CHECK_SECONDS = 10.0
"""While active, how often the APIService is read and applied again if it differs (a renewed CA, a hand
edit, an APIService deleted by `helm upgrade` from an older release that templated it)."""
STOP_WAIT_SECONDS = 2.0
"""On a graceful stop, how long a replica waits for the other live replicas' records to go (they stop at
the same moment on `helm uninstall` or a scale to 0) before it leaves the APIService to them."""
STOP_POLL_SECONDS = 0.25
FIELD_MANAGER = "workerfleet-metrics-api"


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
    if settings.registration is not None:
        ca_file = settings.registration.ca_file or cert_file
        wake = asyncio.Event()

        async def on_change(active: bool, _: Any) -> None:
            if active:
                wake.set()

        ACTIVITY.listen(on_change)
        tasks.append(
            asyncio.create_task(
                _follow_registration(settings.registration, ca_file, wake), name="registration"
            )
        )
        memo["metrics_api_ca_file"] = ca_file
    memo["metrics_api_watches"] = tasks


def _target(settings: RegistrationSettings, ca_file: str | None) -> Target:
    ca_pem = Path(ca_file).read_bytes() if ca_file else b""
    return Target(settings.namespace, settings.service, settings.port, ca_pem)


def _owner(api: Kube, settings: RegistrationSettings) -> Owner | None:
    """The owner to name, or None without one; LookupError when it is named but gone (uninstalling)."""
    if settings.owner_cluster_role is None:
        return None
    api_version = "rbac.authorization.k8s.io/v1"
    body = api.read(api_version, "ClusterRole", "", settings.owner_cluster_role)
    if body is None or body["metadata"].get("deletionTimestamp"):
        raise LookupError(f"ClusterRole {settings.owner_cluster_role} is gone: the release is being removed")
    return Owner(api_version, "ClusterRole", settings.owner_cluster_role, str(body["metadata"]["uid"]))


def ensure_registered(api: Kube, settings: RegistrationSettings, ca_file: str) -> str:
    """Apply the APIService if it differs from what this replica serves; what was done, in a few words."""
    target = _target(settings, ca_file)
    owner = _owner(api, settings)
    live = api.read(registration.API_VERSION, "APIService", "", API_SERVICE_NAME)
    if not registration.may_take(live, target):
        service = ((live or {}).get("spec") or {}).get("service")
        return f"left alone: {API_SERVICE_NAME} routes to another server ({service})"
    desired = registration.manifest(target, owner)
    if not registration.needs_apply(live, desired):
        return "unchanged"
    api.apply_cluster_object(desired, FIELD_MANAGER)
    return f"registered {API_SERVICE_NAME} -> {target.namespace}/{target.service}:{target.port}"


async def _follow_registration(settings: RegistrationSettings, ca_file: str, wake: asyncio.Event) -> None:
    """While this replica is active, keep the APIService pointing at it; until cancelled."""
    logged = ""
    while True:
        wake.clear()
        if ACTIVITY.is_active():
            try:
                done = await asyncio.to_thread(ensure_registered, kube(), settings, ca_file)
            except (LookupError, OSError, ApiError) as error:
                done = f"not registered: {error}"
            except Exception as error:  # the loop must outlive any failure: it is the API's only registrar
                logger.exception("registering the metrics API failed; trying again")
                done = f"not registered: {type(error).__name__}"
            if done not in ("unchanged", logged):
                log = logger.warning if done.startswith("not registered") else logger.info
                log("metrics API %s", done)
            logged = done
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=REGISTER_CHECK_SECONDS)


def _other_live_peers(api: Kube, peering: PeeringSettings) -> list[str]:
    objects = (
        [(namespace, "KopfPeering") for namespace in peering.namespaces]
        if peering.namespaces
        else [("", "ClusterKopfPeering")]
    )
    now = datetime.now(UTC)
    others: set[str] = set()
    for namespace, kind in objects:
        body = api.read(PEERING_API_VERSION, kind, namespace, peering.name) or {}
        others.update(registration.other_live_peers(body.get("status"), peering.identity, now))
    return sorted(others)


def unregister(api: Kube, settings: RegistrationSettings) -> bool:
    """Delete the APIService if it routes to this operator's Service; True when it was deleted."""
    live = api.read(registration.API_VERSION, "APIService", "", API_SERVICE_NAME)
    if live is None or not registration.may_remove(live, _target(settings, None)):
        return False
    return api.delete_exactly(
        registration.API_VERSION, "APIService", "", API_SERVICE_NAME, str(live["metadata"]["uid"])
    )


async def unregister_when_last(settings: RegistrationSettings, peering: PeeringSettings | None) -> None:
    """On a graceful stop (kopf has removed this replica's peering record): remove the APIService unless
    another live replica remains to serve it. Waits up to STOP_WAIT_SECONDS for replicas stopping at
    the same moment to go."""
    api = kube()
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while peering is not None:
        others = await asyncio.to_thread(_other_live_peers, api, peering)
        if not others:
            break
        if time.monotonic() >= deadline:
            logger.info("metrics API left registered for the live replicas %s", ", ".join(others))
            return
        await asyncio.sleep(STOP_POLL_SECONDS)
    if await asyncio.to_thread(unregister, api, settings):
        logger.info("metrics API unregistered: %s removed, no replica serves it", API_SERVICE_NAME)


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
    settings: MetricsApiSettings = memo.get("metrics_api", MetricsApiSettings())
    if settings.port and settings.registration is not None:
        try:
            await unregister_when_last(settings.registration, memo.get("peering"))
        except Exception as error:  # a failed removal must not keep the rest of the cleanup from running
            logger.warning("metrics API not unregistered (%s): the next replica or the GC will", error)
    runner = memo.get("metrics_api_runner")
    if runner is not None:
        await runner.cleanup()
