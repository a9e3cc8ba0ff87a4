"""One client of the Prometheus HTTP API (GET /api/v1/query) for the depth source and the canary
analysis: the bearer token, the TLS context, the bounds on an answer (see backends.bounds) and the
errors that never quote one."""

from __future__ import annotations

import ssl
from http import HTTPStatus

import aiohttp

from workerfleet.api.common import PrometheusServer
from workerfleet.api.credentials import Credentials
from workerfleet.backends.base import failure
from workerfleet.backends.bounds import (
    ANSWER_TIMEOUT_SECONDS,
    MAX_ANSWER_BYTES,
    AnswerOutOfBoundsError,
    decode_json,
    timed_out,
    too_large,
)
from workerfleet.tls import client_context

READ_CHUNK_BYTES = 64 * 1024


class PrometheusError(RuntimeError):
    """Prometheus could not be asked, or its answer is not one number; the message names the URL or
    what is wrong with the answer, never text Prometheus sent. `reason`: the BoundReason when the
    answer passed one of the operator's bounds, else None."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


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
        """The decoded JSON answer to `query`, read within the operator's bounds."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=ANSWER_TIMEOUT_SECONDS), auto_decompress=False
            )
        try:
            async with self._session.get(
                self.url,
                params={"query": query},
                headers={**self._headers, "Accept-Encoding": "identity"},
                ssl=self._ssl,
                allow_redirects=False,  # a redirect could lead past the allowlist of addresses
            ) as response:
                if response.status != HTTPStatus.OK:
                    raise PrometheusError(f"prometheus at {self.url}: HTTP {response.status}")
                if response.headers.get("Content-Encoding", "identity") != "identity":
                    raise PrometheusError(
                        f"prometheus at {self.url}: a compressed answer, though an uncompressed one was asked"
                    )
                return decode_json(await _read_bounded(response))
        except AnswerOutOfBoundsError as error:
            raise PrometheusError(f"prometheus at {self.url}: {error}", error.reason) from error
        except TimeoutError as error:
            bound = timed_out()
            raise PrometheusError(f"prometheus at {self.url}: {bound}", bound.reason) from error
        except (aiohttp.ClientError, ValueError) as error:
            raise PrometheusError(f"prometheus at {self.url}: {failure(error)}") from error

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


ONE_SAMPLE_HINT = ": make the query return one sample (aggregate it with sum)"


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    """The body, or AnswerOutOfBoundsError as soon as it passes MAX_ANSWER_BYTES (the rest is never read)."""
    if (response.content_length or 0) > MAX_ANSWER_BYTES:
        raise too_large(ONE_SAMPLE_HINT)
    body = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise too_large(ONE_SAMPLE_HINT)
    return bytes(body)


def single_sample(body: object) -> float | None:
    """The one number of an instant query's answer (a scalar, or a vector of one sample), as sent:
    NaN, infinities and negative numbers too; None for an empty vector."""
    if not isinstance(body, dict) or body.get("status") != "success":
        raise PrometheusError(_NOT_A_RESULT)
    data = body.get("data")
    if not isinstance(data, dict):
        raise PrometheusError(_NOT_A_RESULT)
    result = data.get("result")
    if data.get("resultType") == "scalar":
        pair = result
    elif data.get("resultType") == "vector":
        if not isinstance(result, list):
            raise PrometheusError(_NOT_A_RESULT)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"query returned {len(result)} series; aggregate it to one (sum)")
        pair = result[0].get("value") if isinstance(result[0], dict) else None
    else:
        raise PrometheusError("query returned neither a scalar nor a vector; use an instant vector")
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        raise PrometheusError(_NOT_A_RESULT)
    try:
        return float(pair[1])
    except ValueError:
        raise PrometheusError("query failed: the sample's value is not a number") from None


_NOT_A_RESULT = "query failed: the answer is not a successful query result"
