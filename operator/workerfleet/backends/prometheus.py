"""Depth from a PromQL query, for queues workerfleet has no client for.

An empty result counts as zero (the series of an empty queue is often absent); more than one
sample is an error, since it is unclear which one is the queue.
"""

from __future__ import annotations

import math
import ssl
from http import HTTPStatus

import aiohttp

from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import PrometheusQueue
from workerfleet.backends.base import QueueSample, QueueUnreachableError, failure
from workerfleet.tls import client_context

TIMEOUT_SECONDS = 5.0


def depth_from_response(body: object) -> int:
    """The single sample of an instant query's vector or scalar result, rounded up."""
    if not isinstance(body, dict) or body.get("status") != "success":
        raise QueueUnreachableError("prometheus query failed: the answer is not a successful query result")
    data = body.get("data")
    if not isinstance(data, dict):
        raise QueueUnreachableError("prometheus query failed: the answer is not a successful query result")
    if data.get("resultType") == "scalar":
        value = data["result"][1]
    elif data.get("resultType") == "vector":
        samples = data["result"]
        if not samples:
            return 0
        if len(samples) > 1:
            raise QueueUnreachableError(
                f"prometheus query returned {len(samples)} series; aggregate it to one (sum)"
            )
        value = samples[0]["value"][1]
    else:
        raise QueueUnreachableError(
            "prometheus query returned neither a scalar nor a vector; use an instant vector"
        )
    number = float(value)
    if math.isnan(number) or number < 0:
        return 0
    return math.ceil(number)


class PrometheusDepth:
    def __init__(self, queue: PrometheusQueue, credentials: Credentials) -> None:
        self._queue = queue
        self._headers = (
            {"Authorization": f"Bearer {credentials.bearer_token}"} if credentials.bearer_token else {}
        )
        self._ssl: ssl.SSLContext | bool = (
            client_context(credentials.ca_pem, queue.tls.server_name) if queue.tls is not None else True
        )
        self._session: aiohttp.ClientSession | None = None

    async def read(self) -> QueueSample:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS))
        url = str(self._queue.address).rstrip("/") + "/api/v1/query"
        try:
            async with self._session.get(
                url, params={"query": self._queue.query}, headers=self._headers, ssl=self._ssl
            ) as response:
                if response.status != HTTPStatus.OK:
                    raise QueueUnreachableError(f"prometheus at {url}: HTTP {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise QueueUnreachableError(f"prometheus at {url}: {failure(error)}") from error
        return QueueSample(depth=depth_from_response(body))

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
