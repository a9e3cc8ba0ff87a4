"""Operator-wide settings that matter in production, applied once at start-up."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Sequence
from typing import Any

import aiohttp
import kopf
from multidict import CIMultiDict

from workerfleet.handlers.reconcile_queue import MAX_CONCURRENT_RECONCILES
from workerfleet.kube.credentials import ApiCredentials, resolve
from workerfleet.kube.options import ClusterOptions

FIELD_MANAGER = "workerfleet"
ANNOTATION_PREFIX = "workerfleet.dev"

WATCH_SERVER_TIMEOUT_SECONDS = 300
WATCH_CLIENT_TIMEOUT_SECONDS = 330
# Bookmarks arrive every 60 s; a stream silent for longer than this is dead, so reconnect.
WATCH_INACTIVITY_TIMEOUT_SECONDS = 90
REQUEST_TIMEOUT_SECONDS = 30
API_ERROR_BACKOFFS_SECONDS = (0.5, 1.0, *([2.0] * 29))
"""kopf's retries of a failed API request (its watch streams' included), ~60 s in all as kopf's own
default, but never more than 2 s apart: kopf's default (1, 1, 2, 3, 5, 8, 13, 21) sleeps up to 21 s
between attempts, so a watch could come back half a minute after the API server did."""


def apply_settings(settings: kopf.OperatorSettings, *, watch_namespaces: Sequence[str] = ()) -> None:
    """Tune kopf for a long-running, shared production API server."""
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_SECONDS
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_SECONDS
    settings.watching.inactivity_timeout = WATCH_INACTIVITY_TIMEOUT_SECONDS
    settings.networking.request_timeout = REQUEST_TIMEOUT_SECONDS
    settings.networking.connect_timeout = 10
    settings.networking.error_backoffs = API_ERROR_BACKOFFS_SECONDS
    settings.queueing.worker_limit = None
    settings.execution.max_workers = MAX_CONCURRENT_RECONCILES  # kopf's own, for the blocking handlers left
    # kopf's bookkeeping goes into annotations: a structural CRD schema would prune it from status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.reporting_component = "workerfleet"
    # Bound to named namespaces, the operator serves exactly those: kopf then neither lists nor watches
    # the cluster's namespaces (no right to, with the chart's watchNamespaces), which it would retry
    # for the whole of error_backoffs, a minute, before serving any; nor watches CRDs after start-up.
    settings.scanning.disabled = bool(watch_namespaces)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    apply_settings(settings, watch_namespaces=memo.get("watch_namespaces", ()))


LOGIN_SECONDS = 600.0
"""kopf logs in again this often (sooner when the token expires sooner), so its watches never
present a token the kubelet rotated away, nor TLS material that was renewed."""


def kopf_session(credentials: ApiCredentials, user_agent: str) -> aiohttp.ClientSession:
    """An aiohttp session for kopf's watches that sends what the operator's own requests send: its
    credentials, impersonation and User-Agent, through the same proxy, checking the same server name."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=credentials.ssl_context()),
        headers=CIMultiDict([("User-Agent", user_agent), *credentials.headers()]),
        proxy=credentials.proxy_url,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class CredentialSession(kopf.AiohttpSession):
    """kopf's session for one set of credentials, equal to another exactly when their credentials are.

    kopf remembers the credentials the server refused (401) and does not take an equal one from a
    login again: it runs out of credentials and the operator stops. Sessions that compared by identity
    were always new to it, so a revoked token read again looped login and request, over 100 a second.
    """

    fingerprint: str
    aiohttp_session: aiohttp.ClientSession = dataclasses.field(compare=False)
    expiration: datetime.datetime | None = dataclasses.field(default=None, compare=False)


@kopf.on.login()
async def login(**_: Any) -> CredentialSession:
    """kopf's watches use the credentials the operator's own requests use, resolved in one place."""
    return await kopf_login()


async def kopf_login() -> CredentialSession:
    """A session for kopf, from credentials resolved now (kopf logs in again on a 401 too)."""
    options = ClusterOptions()
    credentials = await asyncio.to_thread(resolve, options)
    seconds = LOGIN_SECONDS
    if credentials.expiring and credentials.valid_seconds is not None:
        seconds = min(seconds, max(credentials.valid_seconds, 1.0))
    return CredentialSession(
        fingerprint=credentials.fingerprint,
        server=credentials.server,
        aiohttp_session=kopf_session(credentials, options.user_agent),
        default_namespace=credentials.namespace,
        expiration=datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds),
    )
