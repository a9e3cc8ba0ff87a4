"""Depth from a PromQL query, for queues workerfleet has no client for.

An empty result counts as zero (the series of an empty queue is often absent); more than one
sample is an error, since it is unclear which one is the queue.
"""

from __future__ import annotations

import math

from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import PrometheusQueue
from workerfleet.backends.base import QueueSample, QueueUnreachableError
from workerfleet.backends.prometheus_http import PrometheusClient, PrometheusError, single_sample


def depth_from_response(body: object) -> int:
    """The single sample of an instant query's vector or scalar result, rounded up."""
    try:
        number = single_sample(body)
    except PrometheusError as error:
        raise QueueUnreachableError(f"prometheus {error}") from None
    if number is None or math.isnan(number) or number < 0:
        return 0
    if math.isinf(number):
        raise QueueUnreachableError("prometheus query returned +Inf: a depth must be a finite number")
    return math.ceil(number)


class PrometheusDepth:
    def __init__(self, queue: PrometheusQueue, credentials: Credentials) -> None:
        self._queue = queue
        self._client = PrometheusClient(queue, credentials)

    async def read(self) -> QueueSample:
        try:
            body = await self._client.query(self._queue.query)
        except PrometheusError as error:
            raise QueueUnreachableError(str(error), error.reason) from error
        return QueueSample(depth=depth_from_response(body))

    async def close(self) -> None:
        await self._client.close()
