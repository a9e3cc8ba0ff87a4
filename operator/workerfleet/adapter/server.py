"""An aggregated API server for external.metrics.k8s.io, so an HPA can scale a pool on its queue depth.

The API server's aggregator proxies requests here over TLS, proving itself with its front-proxy
client certificate and naming the original user in X-Remote-User/X-Remote-Group headers. Requests
without that certificate are refused; the named user is authorised with a SubjectAccessReview.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from workerfleet.adapter.readings import Readings
from workerfleet.adapter.responses import (
    GROUP_VERSION,
    SelectorError,
    metric_values,
    parse_selector,
    resource_list,
    status_error,
)
from workerfleet.kube.client import Kube
from workerfleet.planners.children import QUEUE_DEPTH_METRIC

logger = logging.getLogger(__name__)

DECISION_CACHE_SECONDS = 30.0
"""An HPA asks every sync period; caching its authorisation keeps SubjectAccessReviews rare."""
BASE_PATH = f"/apis/{GROUP_VERSION}"


@dataclass(frozen=True)
class FrontProxyTrust:
    """Who may proxy requests to us: the aggregator's client CA and allowed certificate names."""

    client_ca_pem: str
    allowed_names: frozenset[str]


class FrontProxy:
    """The trust in the aggregator, followed as the API server publishes a new front-proxy CA.

    A new CA is added to the serving context's verify store, so the aggregator's renewed client
    certificate is accepted at the next handshake; OpenSSL cannot take a CA out of a live store, so
    the previous one stays trusted until the operator restarts. Allowed names are replaced.
    """

    def __init__(self, trust: FrontProxyTrust, context: ssl.SSLContext) -> None:
        self.trust = trust
        self._context = context

    def update(self, trust: FrontProxyTrust) -> bool:
        """Follow `trust`; whether anything changed."""
        if trust == self.trust:
            return False
        if trust.client_ca_pem != self.trust.client_ca_pem:
            self._context.load_verify_locations(cadata=trust.client_ca_pem)
        self.trust = trust
        return True


Authorizer = Callable[[str, tuple[str, ...], str, str], Awaitable[bool]]


def kube_authorizer(kube: Kube) -> Authorizer:
    decisions: dict[tuple[str, tuple[str, ...], str, str], tuple[bool, float]] = {}

    async def allowed(user: str, groups: tuple[str, ...], namespace: str, metric: str) -> bool:
        key = (user, groups, namespace, metric)
        cached = decisions.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        decision = await asyncio.to_thread(
            kube.may_get_external_metric, user, list(groups), namespace, metric
        )
        decisions[key] = (decision, time.monotonic() + DECISION_CACHE_SECONDS)
        return decision

    return allowed


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _proxied_user(request: web.Request, trust: FrontProxyTrust) -> tuple[str, tuple[str, ...]] | None:
    """The user the aggregator vouches for, or None when the request did not come from it."""
    certificate = request.transport.get_extra_info("peercert") if request.transport else None
    if not certificate:
        return None
    common_names = {
        value for entry in certificate.get("subject", ()) for key, value in entry if key == "commonName"
    }
    if trust.allowed_names and not common_names & trust.allowed_names:
        return None
    user = request.headers.get("X-Remote-User")
    if not user:
        return None
    return user, tuple(request.headers.getall("X-Remote-Group", []))


def build_app(
    readings: Readings,
    front_proxy: FrontProxy,
    authorizer: Authorizer,
    ready: Callable[[], bool] = lambda: True,
) -> web.Application:
    """`ready`: whether this replica serves readings (the active one); /readyz answers 503 otherwise."""

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readiness(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok")
        return web.Response(status=503, text="standby: another operator replica serves the metrics")

    async def discovery(request: web.Request) -> web.Response:
        if _proxied_user(request, front_proxy.trust) is None:
            return _json(status_error(401, "Unauthorized", "requests must come through the API server"), 401)
        return _json(resource_list())

    async def metric(request: web.Request) -> web.Response:
        identity = _proxied_user(request, front_proxy.trust)
        if identity is None:
            return _json(status_error(401, "Unauthorized", "requests must come through the API server"), 401)
        namespace, name = request.match_info["namespace"], request.match_info["metric"]
        if name != QUEUE_DEPTH_METRIC:
            return _json(
                status_error(404, "NotFound", f"no external metric {name!r}; try {QUEUE_DEPTH_METRIC}"), 404
            )
        if not await authorizer(identity[0], identity[1], namespace, name):
            message = f"user {identity[0]!r} may not get {name} in namespace {namespace!r}"
            return _json(status_error(403, "Forbidden", message), 403)
        try:
            selector = parse_selector(request.query.get("labelSelector", ""))
        except SelectorError as error:
            return _json(status_error(400, "BadRequest", str(error)), 400)
        return _json(metric_values(namespace, selector, readings.in_namespace(namespace, datetime.now(UTC))))

    app = web.Application()
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", readiness)
    app.router.add_get(BASE_PATH, discovery)
    app.router.add_get(BASE_PATH + "/namespaces/{namespace}/{metric}", metric)
    return app


def server_tls(cert_file: str, key_file: str, trust: FrontProxyTrust) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cadata=trust.client_ca_pem)
    # Probes come without a certificate; /apis handlers refuse requests that did not present one.
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


async def serve(app: web.Application, host: str, port: int, tls: ssl.SSLContext) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    logger.info("external metrics API listening on https://%s:%d%s", host, port, BASE_PATH)
    return runner
