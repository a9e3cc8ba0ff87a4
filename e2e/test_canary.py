"""Canary rollouts against the real cluster, with real Redis, a real Prometheus and real worker processes.

Pods are simulated (kwok runs nothing), so each test runs worker processes on this host with the
revision the operator computed for each track, consuming the pool's real Redis list; Prometheus
scrapes them every second and the operator's analysis reads it.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime

from devenv.operator import OperatorProcess
from devenv.waiting import eventually
from e2e.canary_rig import (
    TOTAL_REPLICAS,
    DeploymentWatch,
    Rig,
    analysis,
    kubectl_plugin,
    ready_workers,
)


def test_a_good_canary_walks_every_step_and_becomes_stable(rig: Rig) -> None:
    # Given a pool with three canary steps and analysis, and stable workers that never fail
    canary = {
        "steps": [
            {"weight": 10, "pauseSeconds": 5},
            {"weight": 50, "pauseSeconds": 5},
            {"weight": 100, "pauseSeconds": 5},
        ],
        "analysis": analysis(rig.prometheus),
    }
    stable = rig.create(canary)
    rig.start_worker(stable, failure_rate=0.0)
    rig.produce(per_second=150)

    # When the template changes and the new revision's workers fail no job either
    revision = rig.change_template(canary)
    rig.start_worker(revision, failure_rate=0.0)

    # Then the canary runs beside the stable Deployment with its share of the replicas
    eventually(
        lambda: rig.deployment_replicas("thumbs-canary") == 1, what="1 canary replica at 10%", timeout=30
    )
    eventually(lambda: rig.deployment_replicas("thumbs") == 9, what="stable at 9 once the canary is ready")

    # And the rollout walks every step and promotes the revision to stable
    eventually(
        lambda: rig.status().get("stableRevision") == revision and rig.rollout().get("phase") == "Healthy",
        what="the canary promoted",
        timeout=120,
    )
    eventually(lambda: rig.deployment_replicas("thumbs-canary") is None, what="the canary Deployment gone")
    assert rig.deployment_replicas("thumbs") == TOTAL_REPLICAS
    stable_deployment = rig.cluster.get("deployment/thumbs", namespace=rig.namespace)
    assert stable_deployment["spec"]["template"]["metadata"]["labels"]["workerfleet.dev/revision"] == revision

    # And the Events tell the story in order
    reasons = [
        reason
        for reason in rig.reasons()
        if reason in ("RolloutStarted", "StepCompleted", "RolloutPromoted", "RolledBack")
    ]
    assert reasons == ["RolloutStarted", "StepCompleted", "StepCompleted", "StepCompleted", "RolloutPromoted"]
    assert "AnalysisPassed" in rig.reasons()


def test_a_bad_canary_is_rolled_back_within_one_analysis_interval(rig: Rig) -> None:
    # Given a pool whose stable workers never fail
    interval = 5
    canary = {
        "steps": [{"weight": 20, "pauseSeconds": 120}, {"weight": 100, "pauseSeconds": 120}],
        "analysis": analysis(rig.prometheus, intervalSeconds=interval, maxIncreaseOverStable=0.05),
    }
    stable = rig.create(canary)
    rig.start_worker(stable, failure_rate=0.0)
    rig.produce(per_second=150)

    # When the new revision's workers fail 30% of their jobs
    revision = rig.change_template(canary)
    eventually(
        lambda: rig.deployment_replicas("thumbs-canary") == 2, what="2 canary replicas at 20%", timeout=30
    )
    rig.start_worker(revision, failure_rate=0.3)

    # Then, once Prometheus shows the canary above the threshold, it is at zero within one interval
    # (the analysis counts every job since the step started, so the probe reads the same window)
    step_started = datetime.fromisoformat(
        eventually(lambda: rig.rollout().get("stepStartedAt"), what="the step's clock started")
    )
    crossed = zero = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and zero is None:
        window = max(interval, math.ceil((datetime.now(UTC) - step_started).total_seconds()))
        total, errors = rig.jobs(revision, window)
        if crossed is None and total >= 100 and errors / total > 0.1:
            crossed = time.monotonic()
        if rig.deployment_replicas("thumbs-canary") == 0:
            zero = time.monotonic()
        time.sleep(0.2)
    assert zero is not None, "the canary was not scaled to zero"
    assert crossed is not None, (
        "Prometheus never showed the canary's error rate above the threshold",
        [event["message"] for event in rig.events() if event["type"] == "Warning"],
    )
    latency = max(zero - crossed, 0.0)
    record = {
        "rollback_latency_seconds": round(latency, 2),
        "interval_seconds": interval,
        "ratio": latency / interval,
    }
    (rig.cluster.layout.logs / "rollback-latency.json").write_text(json.dumps(record))
    assert latency <= interval + 2, record

    # And the pool is Degraded on the stable revision, with a Warning Event that has the numbers
    assert rig.deployment_replicas("thumbs") == TOTAL_REPLICAS
    status = eventually(
        lambda: rig.rollout().get("phase") == "Degraded" and rig.status(), what="status Degraded", timeout=10
    )
    assert (status["rollout"]["phase"], status["stableRevision"]) == ("Degraded", stable)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolloutFailed")
    rolled_back = eventually(
        lambda: [e for e in rig.events() if e["reason"] == "RolledBack"],
        what="a RolledBack Event",
        timeout=10,
    )
    assert rolled_back[0]["type"] == "Warning"
    assert "maxErrorRate 10.0%" in rolled_back[0]["message"]
    assert "canary error rate" in rolled_back[0]["message"]


def test_a_noisy_canary_within_the_increase_over_a_noisy_stable_is_promoted(rig: Rig) -> None:
    # Given stable workers that fail 5% of their jobs, and a threshold relative to stable only (8 points:
    # over a few hundred jobs each, the two measured rates wander by a couple of points either way)
    canary = {
        "steps": [{"weight": 50, "pauseSeconds": 10}],
        "analysis": analysis(rig.prometheus, maxErrorRate=None, maxIncreaseOverStable=0.08),
    }
    stable = rig.create(canary)
    rig.start_worker(stable, failure_rate=0.05)
    rig.produce(per_second=150)

    # When the canary fails 6%, above the stable revision but within 8 points of it
    revision = rig.change_template(canary)
    rig.start_worker(revision, failure_rate=0.06)

    # Then it is promoted, never rolled back
    eventually(
        lambda: rig.status().get("stableRevision") == revision or rig.rollout().get("phase") == "Degraded",
        what="the rollout to end",
        timeout=90,
    )
    assert rig.status()["stableRevision"] == revision, rig.rollout()
    assert "RolledBack" not in rig.reasons()
    assert "AnalysisFailed" not in rig.reasons()


def test_too_few_samples_hold_the_step_without_rolling_back(rig: Rig) -> None:
    # Given a trickle of jobs, far fewer per interval than minSamples
    interval = 3
    canary = {
        "steps": [{"weight": 10, "pauseSeconds": 2}, {"weight": 100, "pauseSeconds": 2}],
        "analysis": analysis(rig.prometheus, intervalSeconds=interval, minSamples=100),
    }
    stable = rig.create(canary)
    rig.start_worker(stable, failure_rate=0.0)
    rig.produce(per_second=4)

    # When the canary fails half of the few jobs it gets
    revision = rig.change_template(canary)
    rig.start_worker(revision, failure_rate=0.5)

    # Then every analysis is inconclusive: the step holds (Paused), nothing is rolled back
    eventually(
        lambda: len(rig.rollout().get("history") or []) >= 4,
        what="four analyses",
        timeout=60,
    )
    rollout = rig.rollout()
    assert (rollout["phase"], rollout["step"], rollout["failedAnalyses"]) == ("Paused", 1, 0), rollout
    assert {entry["verdict"] for entry in rollout["history"]} == {"Inconclusive"}
    assert "minSamples" in rollout["message"]
    assert rig.deployment_replicas("thumbs-canary") == 1
    assert "RolledBack" not in rig.reasons()
    assert "AnalysisInconclusive" in rig.reasons()


def test_the_kubectl_plugin_promotes_aborts_and_retries_and_scaling_splits_the_total(rig: Rig) -> None:
    # Given a canary held at a step without pause (no analysis: people decide)
    cluster, ns = rig.cluster, rig.namespace
    canary = {"steps": [{"weight": 30}, {"weight": 60}]}
    stable = rig.create(canary)
    revision = rig.change_template(canary)
    eventually(lambda: rig.rollout().get("phase") == "Paused", what="step 1 waiting for promote")
    shown = kubectl_plugin(cluster, "-n", ns, "status", "thumbs")
    assert shown.returncode == 0, shown.stderr
    assert "step    1 of 2" in shown.stdout
    assert f"canary  {revision}" in shown.stdout
    assert rig.deployment_replicas("thumbs-canary") == 3

    # When the total changes (as the HPA does through the scale subresource), it is split by the same weight
    cluster.kubectl("scale", "workerpool/thumbs", "-n", ns, "--replicas=20")
    eventually(lambda: rig.deployment_replicas("thumbs-canary") == 6, what="6 of 20 replicas at 30%")
    eventually(
        lambda: rig.deployment_replicas("thumbs") == 14, what="stable at 14 once 6 canary workers are ready"
    )
    cluster.kubectl("scale", "workerpool/thumbs", "-n", ns, f"--replicas={TOTAL_REPLICAS}")
    eventually(lambda: rig.deployment_replicas("thumbs-canary") == 3, what="3 of 10 replicas at 30%")

    # When promoted, the next step runs
    assert kubectl_plugin(cluster, "-n", ns, "promote", "thumbs").returncode == 0
    # (children are applied before status is written, so wait for both)
    eventually(
        lambda: rig.deployment_replicas("thumbs-canary") == 6 and rig.rollout().get("step") == 2,
        what="step 2 with 6 canary replicas at 60%",
    )

    # When aborted, the canary is at zero, the pool Degraded, and status exits non-zero
    assert kubectl_plugin(cluster, "-n", ns, "abort", "thumbs").returncode == 0
    eventually(
        lambda: rig.deployment_replicas("thumbs-canary") == 0 and rig.rollout().get("phase") == "Degraded",
        what="the canary at zero, Degraded",
    )
    assert rig.deployment_replicas("thumbs") == TOTAL_REPLICAS
    degraded = kubectl_plugin(cluster, "-n", ns, "status", "thumbs")
    assert degraded.returncode == 1
    assert "Degraded" in degraded.stdout

    # When retried, the rollout starts again from step 1
    assert kubectl_plugin(cluster, "-n", ns, "retry", "thumbs").returncode == 0
    eventually(
        lambda: (
            rig.deployment_replicas("thumbs-canary") == 3
            and (rig.rollout().get("phase"), rig.rollout().get("step")) == ("Paused", 1)
        ),
        what="step 1 again with 3 canary replicas, waiting for promote",
    )

    # When promoted in full, the canary becomes stable at once
    assert kubectl_plugin(cluster, "-n", ns, "promote", "thumbs", "--full").returncode == 0
    eventually(lambda: rig.status().get("stableRevision") == revision, what="the canary promoted in full")
    eventually(lambda: rig.deployment_replicas("thumbs-canary") is None, what="the canary Deployment gone")
    assert rig.deployment_replicas("thumbs") == TOTAL_REPLICAS
    assert stable != revision
    reasons = rig.reasons()
    for reason in ("RolloutStarted", "StepCompleted", "RolloutAborted", "RolloutPromoted"):
        assert reason in reasons, reasons

    # And `kubectl get wp` shows the phase
    table = cluster.kubectl("get", "wp", "thumbs", "-n", ns).stdout
    assert "Healthy" in table, table


def test_an_operator_killed_mid_step_continues_where_it_was(
    rig: Rig, operator_process: OperatorProcess
) -> None:
    # Given a canary at step 1 of 2 (no analysis: time alone moves it)
    canary = {"steps": [{"weight": 20, "pauseSeconds": 12}, {"weight": 50, "pauseSeconds": 600}]}
    rig.create(canary)
    rig.change_template(canary)
    eventually(lambda: rig.deployment_replicas("thumbs-canary") == 2, what="2 canary replicas at 20%")
    started_at = eventually(
        lambda: rig.rollout().get("stepStartedAt"), what="the step's clock started, its canary ready"
    )

    # When the operator is killed mid-step and started again before the step has held long enough
    operator_process.kill()
    time.sleep(3)
    assert (rig.rollout()["step"], rig.deployment_replicas("thumbs-canary")) == (1, 2)
    operator_process.start()

    # Then it goes on from the same step, timed from when that step began, to the next one
    eventually(lambda: rig.rollout().get("step") == 2, what="step 2 after the restart", timeout=30)
    assert rig.rollout()["phase"] == "Progressing"
    assert rig.deployment_replicas("thumbs-canary") == 5
    eventually(lambda: rig.deployment_replicas("thumbs") == 5, what="stable at 5 once the canary is ready")
    # And nothing was started twice: one canary Deployment, one RolloutStarted
    listing = rig.cluster.get("deployments", "-l", "workerfleet.dev/pool=thumbs", namespace=rig.namespace)
    assert sorted(item["metadata"]["name"] for item in listing["items"]) == ["thumbs", "thumbs-canary"]
    assert rig.reasons().count("RolloutStarted") == 1
    step_completed = next(e for e in rig.events() if e["reason"] == "StepCompleted")
    assert "held 12s" in step_completed["message"]
    assert started_at < rig.rollout()["stepStartedAt"]


def test_a_canary_whose_workers_never_get_ready_is_rolled_back_at_the_progress_deadline(rig: Rig) -> None:
    # Given a pool with a 10 s progress deadline
    canary = {"steps": [{"weight": 20, "pauseSeconds": 5}], "progressDeadlineSeconds": 10}
    stable = rig.create(canary)

    # When the new revision's pods can be scheduled on no node
    revision = rig.change_template(canary, nodeSelector={"topology.kubernetes.io/zone": "no-such-zone"})

    # Then the step waits for its canary workers, its clock not running
    eventually(
        lambda: "waiting for 2 canary workers" in rig.rollout().get("message", ""),
        what="the step waiting for its canary",
        timeout=30,
    )
    waiting = rig.rollout()
    assert waiting["phase"] == "Progressing"
    assert waiting.get("stepStartedAt") is None
    assert waiting["waitingSince"]

    # And at the deadline the canary is rolled back, with a Warning that says why
    eventually(lambda: rig.rollout().get("phase") == "Degraded", what="the rollout failed", timeout=40)
    eventually(lambda: rig.deployment_replicas("thumbs-canary") == 0, what="the canary at zero", timeout=30)
    assert rig.deployment_replicas("thumbs") == TOTAL_REPLICAS
    assert rig.status()["stableRevision"] == stable
    [rolled_back] = [event for event in rig.events() if event["reason"] == "RolledBack"]
    assert rolled_back["type"] == "Warning"
    assert "0 of 2 canary workers ready after progressDeadlineSeconds 10" in rolled_back["message"]
    assert revision in rolled_back["message"]


def test_promoting_from_a_full_canary_keeps_every_workerready_workers(rig: Rig) -> None:
    # Given a canary at 100%: all ten workers run the new revision, the stable Deployment none
    canary = {"steps": [{"weight": 100}]}
    rig.create(canary)
    revision = rig.change_template(canary)
    eventually(
        lambda: (
            rig.rollout().get("phase") == "Paused"
            and ready_workers(rig, "thumbs-canary") == TOTAL_REPLICAS
            and rig.deployment_replicas("thumbs") == 0
        ),
        what="ten ready canary workers and no stable one, waiting for promote",
    )

    # When it is promoted
    watch = DeploymentWatch(rig.cluster, rig.namespace)
    try:
        eventually(lambda: watch.ready_after_each, what="the watch's first listing", timeout=30)
        promoted_at = time.monotonic()
        assert kubectl_plugin(rig.cluster, "-n", rig.namespace, "promote", "thumbs").returncode == 0
        eventually(
            lambda: (
                rig.rollout().get("phase") == "Healthy" and rig.deployment_replicas("thumbs-canary") is None
            ),
            what="the promotion done, the canary Deployment gone",
        )
        eventually(
            lambda: any(kind == "DELETED" for _, kind, _, _ in watch.ready_after_each),
            what="the watch to see the canary go",
            timeout=10,
        )
    finally:
        watch.stop()

    # Then the stable Deployment runs the new revision with all ten workers
    assert rig.status()["stableRevision"] == revision
    assert ready_workers(rig, "thumbs") == TOTAL_REPLICAS
    # And at no moment were fewer than ten workers ready: the canary went only after stable was ready
    during = [entry for entry in watch.ready_after_each if entry[0] >= promoted_at]
    fewest = min(ready for _, _, _, ready in during)
    deleted_at = next(at for at, kind, _, _ in during if kind == "DELETED")
    print(
        f"promotion from 100%: canary gone {deleted_at - promoted_at:.1f}s after promote,"
        f" fewest ready {fewest}"
    )
    assert fewest >= TOTAL_REPLICAS, during
    assert rig.reasons().count("RolloutPromoted") == 1
