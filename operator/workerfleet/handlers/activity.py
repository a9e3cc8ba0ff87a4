"""Whether this operator replica is the active one, for everything kopf's pause does not cover.

With peering, kopf pauses its own event handling on a standby replica, but the queue pollers, the
rollout clocks, the metrics API and the pool metrics are plain tasks. This module reads the peering
object(s) every few seconds, decides with planners.peering exactly as kopf does, and tells the rest
of the operator: writers check `ACTIVITY.is_active()` before they write, and listeners stop their tasks
when the replica turns standby and catch up on every pool when it turns active (kopf lists the
resources afresh when it resumes, but our verdict and kopf's may flip a moment apart, so the catch-up
does not rely on that replay).

Standalone (no peering), the replica is always active.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from workerfleet.kube.client import Kube, kube
from workerfleet.planners.peering import RoleReason, RoleVerdict, decide_role, pods_to_unmark
from workerfleet.planners.scope import serves_namespace

logger = logging.getLogger(__name__)

PEERING_API_VERSION = "kopf.dev/v1"
CHECK_SECONDS = 2.0
"""How often the peering object is read; bounds how late a replica notices a change of role."""
ACTIVE_LABEL = "workerfleet.dev/active"
"""Set to "true" on the active replica's own pod: the metrics API Service selects it."""
REMARK_SECONDS = 30.0
"""While active, how often the replica labels its pod again and takes the label off other pods: heals a
label that a replica which briefly thought itself active too took off (or a person did)."""

Pools = list[dict[str, Any]]
Listener = Callable[[bool, Pools], Awaitable[None]]


@dataclass(frozen=True)
class PeeringSettings:
    """How this replica takes part in kopf's peering."""

    name: str
    identity: str
    priority: int
    lifetime_seconds: int
    namespaces: tuple[str, ...] = ()
    """Watched namespaces (a KopfPeering in each); empty: cluster-wide (one ClusterKopfPeering)."""
    pod: tuple[str, str] | None = None
    """(namespace, name) of this replica's pod, to label it while active; None outside a pod."""
    pod_selector: str | None = None
    """Label selector of the release's operator pods (in the pod's namespace): on turning active, the
    replica takes the label off every other one, since a killed replica cannot take off its own.
    None: only this replica's own pod is labelled and unlabelled."""


class Activity:
    """This replica's role, and who to tell when it changes."""

    def __init__(self) -> None:
        self._active = True
        self.verdict: RoleVerdict | None = None
        self._listeners: list[Listener] = []

    def is_active(self) -> bool:
        """A method, not a property: it can change across any await (and type checkers must know)."""
        return self._active

    def listen(self, listener: Listener) -> None:
        """`listener(active, pools)` runs on every change; `pools` is every watched pool on turning active."""
        self._listeners.append(listener)

    async def change(self, active: bool, pools: Pools) -> None:
        if active == self._active:
            return
        self._active = active
        for listener in self._listeners:
            try:
                await listener(active, pools)
            except Exception:
                logger.exception("a listener failed on turning %s", "active" if active else "standby")

    def reset(self) -> None:
        """Active again with no listeners' state changed (tests, and a standalone run)."""
        self._active = True
        self.verdict = None


ACTIVITY = Activity()


def _read_verdicts(api: Kube, settings: PeeringSettings, now: datetime) -> list[RoleVerdict]:
    objects: list[tuple[str, str]] = (
        [(namespace, "KopfPeering") for namespace in settings.namespaces]
        if settings.namespaces
        else [("", "ClusterKopfPeering")]
    )
    verdicts = []
    for namespace, kind in objects:
        body = api.get(PEERING_API_VERSION, kind, namespace, settings.name)
        verdicts.append(
            decide_role(
                (body or {}).get("status"),
                identity=settings.identity,
                priority=settings.priority,
                now=now,
                exists=body is not None,
            )
        )
    return verdicts


def _label_pod(api: Kube, settings: PeeringSettings, active: bool) -> bool:
    if settings.pod is None:
        return True
    namespace, name = settings.pod
    try:
        api.label_pod(namespace, name, {ACTIVE_LABEL: "true" if active else None})
    except Exception:
        logger.exception("could not mark pod %s/%s %s", namespace, name, "active" if active else "standby")
        return False
    return True


def _unmark_others(api: Kube, settings: PeeringSettings) -> None:
    if settings.pod is None or settings.pod_selector is None:
        return
    namespace, name = settings.pod
    marked = api.pod_labels(namespace, f"{settings.pod_selector},{ACTIVE_LABEL}")
    for other in pods_to_unmark(name, marked, ACTIVE_LABEL):
        api.label_pod(namespace, other, {ACTIVE_LABEL: None})
        logger.info("took %s off pod %s/%s: its replica no longer acts", ACTIVE_LABEL, namespace, other)


def _mark_pods(api: Kube, settings: PeeringSettings, active: bool) -> bool:
    """Label this replica's pod (active) or take the label off (standby); when active, then take it off
    every other pod of the release. False when a call failed: the caller tries again."""
    if not _label_pod(api, settings, active):
        return False
    if not active:
        return True
    try:
        _unmark_others(api, settings)
    except Exception:
        logger.exception("could not take %s off the other operator pods", ACTIVE_LABEL)
        return False
    return True


def _describe(verdicts: list[RoleVerdict]) -> str:
    blocking = [verdict for verdict in verdicts if not verdict.active]
    if not blocking:
        return "highest priority among the live peers"
    first = blocking[0]
    if first.reason is RoleReason.NO_PEERING_OBJECT:
        return "the peering object does not exist: create it (the chart does), or run with --standalone"
    if first.reason is RoleReason.PRIORITY_COLLISION:
        return f"a live peer has this replica's priority, so kopf pauses both: {', '.join(first.blockers)}"
    if first.reason is RoleReason.OUTRANKED:
        return f"outranked by {', '.join(first.blockers)}"
    return "this replica's own peering record is not there (yet)"


async def follow_peering(settings: PeeringSettings, api: Kube, activity: Activity) -> None:
    """Read the peering object(s) until cancelled; tell `activity` when the role changes."""
    # Before anything else, a label left on this pod by its previous container (killed, so it could
    # not take the label off) goes: this replica starts as a standby, whatever the peering object says.
    labelled: bool | None = False if await asyncio.to_thread(_label_pod, api, settings, False) else None
    marked_at = time.monotonic()
    logged: str | None = None
    while True:
        now = datetime.now(UTC)
        try:
            verdicts = await asyncio.to_thread(_read_verdicts, api, settings, now)
        except Exception:
            logger.exception("reading the peering object failed; keeping the current role")
            await asyncio.sleep(CHECK_SECONDS)
            continue
        active = all(verdict.active for verdict in verdicts)
        activity.verdict = verdicts[0] if active else next(v for v in verdicts if not v.active)
        description = f"{'active' if active else 'standby'}: {_describe(verdicts)}"
        if description != logged:
            logger.info(
                "operator replica %s (priority %d) is %s", settings.identity, settings.priority, description
            )
            logged = description
        if not active and activity.is_active():
            await activity.change(False, [])
        remark = active and labelled is True and time.monotonic() - marked_at >= REMARK_SECONDS
        if labelled is not active or remark:
            labelled = active if await asyncio.to_thread(_mark_pods, api, settings, active) else None
            marked_at = time.monotonic()
        if active and not activity.is_active():
            try:
                listed = await asyncio.to_thread(api.list_pools, settings.namespaces)
                pools = [
                    pool
                    for pool in listed
                    if serves_namespace(pool["metadata"]["namespace"], settings.namespaces)
                ]
            except Exception:
                logger.exception("listing the pools to catch up on failed; trying again")
            else:
                await activity.change(True, pools)
        rechecks = [verdict.recheck_at for verdict in verdicts if verdict.recheck_at is not None]
        delay = CHECK_SECONDS
        if rechecks:
            delay = min(delay, max(0.1, (min(rechecks) - datetime.now(UTC)).total_seconds()))
        await asyncio.sleep(delay)


def pod_from_environment() -> tuple[str, str] | None:
    """This replica's pod, from the downward API variables the chart sets."""
    name, namespace = os.environ.get("POD_NAME"), os.environ.get("POD_NAMESPACE")
    return (namespace, name) if name and namespace else None


@kopf.on.startup()
async def start_following_peering(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    peering: PeeringSettings | None = memo.get("peering")
    if peering is None:
        ACTIVITY.reset()
        return
    settings.peering.lifetime = peering.lifetime_seconds
    # Standby until the peering object says otherwise: kopf's handlers may start before that.
    await ACTIVITY.change(False, [])
    memo["peering_task"] = asyncio.create_task(follow_peering(peering, kube(), ACTIVITY), name="peering")


@kopf.on.cleanup()
async def stop_following_peering(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = memo.get("peering_task")
    if task is None:
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ACTIVITY.change(False, [])
    peering: PeeringSettings = memo["peering"]
    await asyncio.to_thread(_label_pod, kube(), peering, False)
