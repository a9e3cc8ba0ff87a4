"""The activity task: reads the peering object, flips the role, tells listeners, labels the pod."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from workerfleet.handlers import activity as activity_module
from workerfleet.handlers.activity import ACTIVE_LABEL, Activity, PeeringSettings, follow_peering
from workerfleet.handlers.autoscaling import Pollers

SETTINGS = PeeringSettings(
    name="workerfleet", identity="me", priority=10, lifetime_seconds=30, pod=("wf-system", "wf-abc")
)
POOL = {"metadata": {"namespace": "media", "name": "thumbs"}, "spec": {}}


def _record(priority: int) -> dict[str, Any]:
    return {"priority": priority, "lifetime": 30, "lastseen": datetime.now(UTC).isoformat()}


class FakeKube:
    def __init__(self) -> None:
        self.peering: dict[str, Any] | None = {"status": {"me": _record(10)}}
        self.reads: list[tuple[str, str, str, str]] = []
        self.labels: list[str | None] = []
        self.pods: dict[str, dict[str, str]] = {}
        """Other pods of the release, by name, with their labels."""
        self.selectors: list[str] = []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((api_version, kind, namespace, name))
        return self.peering

    def list_pools(self, namespaces: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        return [POOL]

    def label_pod(self, namespace: str, name: str, labels: dict[str, str | None]) -> None:
        assert SETTINGS.pod is not None
        assert namespace == SETTINGS.pod[0]
        if name != SETTINGS.pod[1]:
            assert labels == {ACTIVE_LABEL: None}
            self.pods[name].pop(ACTIVE_LABEL, None)
            return
        self.labels.append(labels[ACTIVE_LABEL])

    def pod_labels(self, namespace: str, label_selector: str) -> dict[str, dict[str, str]]:
        assert SETTINGS.pod is not None
        assert namespace == SETTINGS.pod[0]
        self.selectors.append(label_selector)
        return {name: labels for name, labels in self.pods.items() if ACTIVE_LABEL in labels}


async def _until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


@contextlib.asynccontextmanager
async def _following(
    kube: FakeKube, activity: Activity, settings: PeeringSettings = SETTINGS
) -> AsyncIterator[None]:
    """follow_peering running for the block, cancelled after it."""
    task = asyncio.create_task(follow_peering(settings, kube, activity))  # type: ignore[arg-type]
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture(autouse=True)
def fast_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity_module, "CHECK_SECONDS", 0.01)


def test_standby_to_active_to_standby_tells_listeners_and_labels_the_pod() -> None:
    async def scenario() -> None:
        kube, activity = FakeKube(), Activity()
        calls: list[tuple[bool, list[dict[str, Any]]]] = []

        async def listener(active: bool, pools: list[dict[str, Any]]) -> None:
            calls.append((active, pools))

        activity.listen(listener)
        await activity.change(False, [])  # as at start-up with peering
        async with _following(kube, activity):
            await _until(activity.is_active)
            assert kube.labels == [None, "true"]  # a label left from before a restart goes first
            # A live peer with a higher priority appears
            kube.peering = {"status": {"me": _record(10), "other": _record(11)}}
            await _until(lambda: not activity.is_active())
            await _until(lambda: kube.labels == [None, "true", None])
            # ... and leaves gracefully
            kube.peering = {"status": {"me": _record(10)}}
            await _until(activity.is_active)
        assert calls == [(False, []), (True, [POOL]), (False, []), (True, [POOL])]
        assert kube.reads[0] == ("kopf.dev/v1", "ClusterKopfPeering", "", "workerfleet")

    asyncio.run(scenario())


def test_a_missing_peering_object_keeps_the_replica_standby() -> None:
    async def scenario() -> None:
        kube, activity = FakeKube(), Activity()
        kube.peering = None
        await activity.change(False, [])
        async with _following(kube, activity):
            await _until(lambda: len(kube.reads) >= 3)
            assert not activity.is_active()
            assert kube.labels == [None]  # a label left over from before a restart goes

    asyncio.run(scenario())


def test_namespaced_operator_is_active_only_when_every_namespace_says_so() -> None:
    settings = PeeringSettings(
        name="wf", identity="me", priority=10, lifetime_seconds=30, namespaces=("a", "b")
    )

    class PerNamespace(FakeKube):
        def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
            self.reads.append((api_version, kind, namespace, name))
            others = {"other": _record(99)} if namespace == "b" else {}
            return {"status": {"me": _record(10), **others}}

    async def scenario() -> None:
        kube, activity = PerNamespace(), Activity()
        await activity.change(False, [])
        async with _following(kube, activity, settings):
            await _until(lambda: len(kube.reads) >= 4)
            assert not activity.is_active()
            assert {read[1:3] for read in kube.reads} == {("KopfPeering", "a"), ("KopfPeering", "b")}

    asyncio.run(scenario())


def test_pollers_poll_nothing_on_standby_and_catch_up_on_turning_active(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    activity = Activity()
    monkeypatch.setattr("workerfleet.handlers.autoscaling.ACTIVITY", activity)
    pool = {
        "metadata": {"namespace": "media", "name": "thumbs"},
        "spec": {"autoscaling": {"maxReplicas": 3}},
    }
    gone = {"metadata": {"namespace": "media", "name": "gone"}, "spec": {"autoscaling": {"maxReplicas": 3}}}

    async def scenario() -> None:
        pollers = Pollers()
        started: list[tuple[str, str]] = []

        async def fake_poll(key: tuple[str, str]) -> None:
            started.append(key)
            await asyncio.sleep(3600)

        monkeypatch.setattr(pollers, "_poll", fake_poll)
        activity.listen(pollers.on_activity)
        await activity.change(False, [])
        pollers.update(pool)
        pollers.update(gone)
        await asyncio.sleep(0)
        assert started == []  # remembered, not polled
        await activity.change(True, [pool])  # "gone" was deleted while on standby
        await asyncio.sleep(0)
        assert started == [("media", "thumbs")]
        await activity.change(False, [])
        assert started == [("media", "thumbs")]
        assert not [task for task in pollers._tasks.values() if not task.done()]
        await pollers.stop_all()

    asyncio.run(scenario())


def test_turning_active_takes_the_label_off_the_other_pods_of_the_release() -> None:
    settings = PeeringSettings(
        name="workerfleet",
        identity="me",
        priority=10,
        lifetime_seconds=30,
        pod=("wf-system", "wf-abc"),
        pod_selector="app.kubernetes.io/instance=wf",
    )

    async def scenario() -> None:
        kube, activity = FakeKube(), Activity()
        # A killed replica's pod still carries the label; a standby's pod does not
        kube.pods = {"wf-dead": {ACTIVE_LABEL: "true"}, "wf-standby": {}}
        kube.peering = {"status": {"me": _record(10), "other": _record(11)}}
        await activity.change(False, [])
        async with _following(kube, activity, settings):
            await _until(lambda: len(kube.reads) >= 3)
            assert kube.selectors == []  # a standby leaves the other pods alone
            assert kube.pods["wf-dead"] == {ACTIVE_LABEL: "true"}
            # The peer with the higher priority goes: this replica turns active
            kube.peering = {"status": {"me": _record(10)}}
            await _until(activity.is_active)
            await _until(lambda: kube.pods["wf-dead"] == {})
            assert kube.labels == [None, "true"]  # its own pod first, so the Service never routes nowhere
            assert kube.selectors == [f"app.kubernetes.io/instance=wf,{ACTIVE_LABEL}"]

    asyncio.run(scenario())


def test_a_failed_sweep_is_tried_again_and_the_active_replica_sweeps_again_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = PeeringSettings(
        name="workerfleet",
        identity="me",
        priority=10,
        lifetime_seconds=30,
        pod=("wf-system", "wf-abc"),
        pod_selector="app.kubernetes.io/instance=wf",
    )
    monkeypatch.setattr(activity_module, "REMARK_SECONDS", 0.05)

    class FlakyKube(FakeKube):
        def pod_labels(self, namespace: str, label_selector: str) -> dict[str, dict[str, str]]:
            if not self.selectors:
                self.selectors.append("failed")
                raise RuntimeError("the API server is away")
            return super().pod_labels(namespace, label_selector)

    async def scenario() -> None:
        kube, activity = FlakyKube(), Activity()
        kube.pods = {"wf-dead": {ACTIVE_LABEL: "true"}}
        await activity.change(False, [])
        async with _following(kube, activity, settings):
            await _until(lambda: kube.pods["wf-dead"] == {})  # after the failure, on the next check
            # Someone labels another pod while this replica stays active: it goes again
            kube.pods["wf-other"] = {ACTIVE_LABEL: "true"}
            await _until(lambda: kube.pods["wf-other"] == {})
            assert activity.is_active()
            assert kube.labels[:2] == [None, "true"]
            assert set(kube.labels[1:]) == {"true"}

    asyncio.run(scenario())
