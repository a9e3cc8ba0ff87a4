"""The front-proxy trust is read again every minute for the operator's whole life: an API server that
cannot be reached is a warning and another try, never the end of the loop."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from workerfleet.adapter.server import FrontProxy, FrontProxyTrust
from workerfleet.handlers import metrics_api
from workerfleet.kube.client import Kube
from workerfleet.kube.credentials import ApiCredentials, CredentialSource
from workerfleet.kube.options import ClusterOptions
from workerfleet.kube.rest import RETRY_ATTEMPTS, Rest


def test_the_front_proxy_loop_outlives_an_unreachable_api_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        server = f"http://127.0.0.1:{closed.getsockname()[1]}"
    source = CredentialSource(ClusterOptions(), resolver=lambda _: ApiCredentials(server=server))
    rest = Rest(source=source, sleep=lambda _: None)
    monkeypatch.setattr(metrics_api, "kube", lambda: Kube(rest))
    monkeypatch.setattr(metrics_api, "FRONT_PROXY_CHECK_SECONDS", 0.01)
    trust = FrontProxyTrust(client_ca_pem="", allowed_names=frozenset())
    front_proxy = FrontProxy(trust, ssl.create_default_context())

    async def follow_for_a_while() -> bool:
        task = asyncio.create_task(metrics_api._follow_front_proxy(front_proxy))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if rest.retries >= 2 * (RETRY_ATTEMPTS - 1):
                break
        running = not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return running

    assert asyncio.run(follow_for_a_while()), "the loop ended on the first failed read"
    assert rest.retries >= 2 * (RETRY_ATTEMPTS - 1), "it kept trying, read after read"
