"""The three registrations every per-pool task set needs, made once: a feature's `PoolTasks` follows
the watch events of the pools this operator serves, starts and stops with the operator's activity
(leadership, peering), and is closed when the operator stops."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from workerfleet.api.base import GROUP, VERSION
from workerfleet.handlers.activity import ACTIVITY, Listener
from workerfleet.handlers.pool_tasks import PoolTasks, route_pool_event
from workerfleet.handlers.tenancy import served


def follow_pools(
    tasks: PoolTasks, on_activity: Listener, close: Callable[[], Awaitable[None]], handler_id: str
) -> None:
    """Register `tasks` with kopf as `<handler_id>-changed` and `<handler_id>-stopped`."""
    ACTIVITY.listen(on_activity)

    @kopf.on.event(GROUP, VERSION, "workerpools", when=served, id=f"{handler_id}-changed")
    async def changed(type: str | None, body: kopf.Body, **_: Any) -> None:
        route_pool_event(tasks, type, body)

    @kopf.on.cleanup(id=f"{handler_id}-stopped")
    async def stopped(**_: Any) -> None:
        await close()
