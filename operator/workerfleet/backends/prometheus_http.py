"""One client of the Prometheus HTTP API (GET /api/v1/query) for the depth source and the canary
analysis: the bearer token, the TLS context, the timeout and the errors that never quote an answer."""

from __future__ import annotations

import ssl
from http import HTTPStatus

import aiohttp

from workerfleet.api.common import PrometheusServer
from workerfleet.api.credentials import Credentials
from workerfleet.backends.base import failure
from workerfleet.tls import client_context

TIMEOUT_SECONDS = 5.0


class PrometheusError(RuntimeError):
    """Prometheus could not be asked, or its answer is not one number; the message names the URL or
    what is wrong with the answer, never text Prometheus sent."""


class PrometheusClient:
    """Instant queries against one Prometheus, over one session opened on the first query."""

    def __init__(self, server: PrometheusServer, credentials: Credentials) -> None:
        self.url = str(server.address).rstrip("/") + "/api/v1/query"
        self._headers = (
            {"Authorization": f"Bearer {credentials.bearer_token}"} if credentials.bearer_token else {}
        )
        self._ssl: ssl.SSLContext | bool = (
            client_context(credentials.ca_pem, server.tls.server_name) if server.tls is not None else True
        )
        self._session: aiohttp.ClientSession | None = None

    async def query(self, query: str) -> object:
        """The decoded JSON answer to `query`."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS))
        try:
            async with self._session.get(
                self.url, params={"query": query}, headers=self._headers, ssl=self._ssl
            ) as response:
                if response.status != HTTPStatus.OK:
                    raise PrometheusError(f"prometheus at {self.url}: HTTP {response.status}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise PrometheusError(f"prometheus at {self.url}: {failure(error)}") from error

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def single_sample(body: object) -> float | None:
    """The one number of an instant query's answer (a scalar, or a vector of one sample), as sent:
    NaN and negative numbers too; None for an empty vector."""
    if not isinstance(body, dict) or body.get("status") != "success":
        raise PrometheusError("query failed: the answer is not a successful query result")
    data = body.get("data")
    if not isinstance(data, dict):
        raise PrometheusError("query failed: the answer is not a successful query result")
    if data.get("resultType") == "scalar":
        text = data["result"][1]
    elif data.get("resultType") == "vector":
        samples = data["result"]
        if not samples:
            return None
        if len(samples) > 1:
            raise PrometheusError(f"query returned {len(samples)} series; aggregate it to one (sum)")
        text = samples[0]["value"][1]
    else:
        raise PrometheusError("query returned neither a scalar nor a vector; use an instant vector")
    return float(text)
