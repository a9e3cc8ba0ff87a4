"""Rollouts under faults of real components: canary workers that crash or hang, an operator killed
while it promotes. Each test prints the time the fault took to be handled (README "Rollout faults")."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime

import pytest

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

INTERVAL_SECONDS = 3
NO_SAMPLES_LIMIT = 3
RESTART_LIMIT = 3
RESTART_EVERY_SECONDS = 6.0
"""Several scrapes of the 1 s test Prometheus between kills, so each restart is a change it sees;
the canary has finished jobs before the first kill, so it is never merely silent."""


def _seconds_since(stamp: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()


@pytest.mark.parametrize("fault", ["crashed", "hung"])
def test_a_canary_that_does_no_work_is_rolled_back_as_unhealthy(rig: Rig, fault: str) -> None:
    # Given a pool whose stable workers process jobs, with analysis that waits for data (onNoData Pause)
    canary = {
        "steps": [{"weight": 20, "pauseSeconds": 300}],
        "analysis": analysis(
            rig.prometheus, intervalSeconds=INTERVAL_SECONDS, minSamples=50, noSamplesLimit=NO_SAMPLES_LIMIT
        ),
    }
    stable = rig.create(canary)
    rig.start_worker(stable, failure_rate=0.0)
    rig.produce(per_second=100)

    # When the new revision's worker crashes at start (its handlers cannot be imported), or hangs
    revision = rig.change_template(canary)
    if fault == "crashed":
        worker = rig.start_worker(revision, failure_rate=0.0, handlers="workerfleet.worker.no_such_module")
    else:
        worker = rig.start_worker(revision, failure_rate=0.0)
        os.kill(worker.pid, signal.SIGSTOP)
    started = eventually(lambda: rig.rollout().get("stepStartedAt"), what="the step's clock started")

    # Then the rollout does not wait forever: it rolls back, and says the canary is unhealthy
    status = eventually(
        lambda: rig.rollout().get("phase") == "Degraded" and rig.status(),
        what="the silent canary rolled back",
        timeout=60,
    )
    took = _seconds_since(started)
    if fault == "hung":
        os.kill(worker.pid, signal.SIGCONT)
    print(f"{fault} canary rolled back {took:.1f}s after its step started")
    assert took <= NO_SAMPLES_LIMIT * INTERVAL_SECONDS + 15
    assert status["stableRevision"] == stable
    eventually(lambda: rig.deployment_replicas("thumbs-canary") == 0, what="the canary at zero")
    [unhealthy] = [event for event in rig.events() if event["reason"] == "CanaryUnhealthy"]
    assert unhealthy["type"] == "Warning"
    assert f"finished no job in {NO_SAMPLES_LIMIT} analyses in a row" in unhealthy["message"]


def test_a_canary_that_keeps_restarting_is_rolled_back_as_unhealthy(rig: Rig) -> None:
    # Given a pool whose stable workers process jobs, and a long step that a canary doing jobs
    # without errors would pass
    canary = {
        "steps": [{"weight": 20, "pauseSeconds": 300}],
        "analysis": analysis(
            rig.prometheus, intervalSeconds=INTERVAL_SECONDS, minSamples=10, restartLimit=RESTART_LIMIT
        ),
    }
    stable = rig.create(canary)
    rig.start_worker(stable, failure_rate=0.0)
    rig.produce(per_second=100)

    # When the new revision's worker is killed every few seconds and restarted in place, as an
    # OOM-killed container is: it finishes jobs without errors in between, and its pod stays ready
    revision = rig.change_template(canary)
    worker = rig.start_worker(revision, failure_rate=0.0)
    started = eventually(lambda: rig.rollout().get("stepStartedAt"), what="the step's clock started")
    eventually(lambda: rig.jobs(revision, 60)[0] > 0, what="the canary finishing jobs", timeout=30)
    kills = 0
    while kills < RESTART_LIMIT * 4 and rig.rollout().get("phase") != "Degraded":
        time.sleep(RESTART_EVERY_SECONDS)
        worker = rig.restart_worker(worker)
        kills += 1

    # Then it is rolled back as unhealthy, with the restarts in the reason
    status = eventually(
        lambda: rig.rollout().get("phase") == "Degraded" and rig.status(),
        what="the restarting canary rolled back",
        timeout=30,
    )
    print(
        f"restarting canary rolled back {_seconds_since(started):.1f}s after its step started, {kills} kills"
    )
    assert status["stableRevision"] == stable
    eventually(lambda: rig.deployment_replicas("thumbs-canary") == 0, what="the canary at zero")
    [unhealthy] = [event for event in rig.events() if event["reason"] == "CanaryUnhealthy"]
    assert unhealthy["type"] == "Warning"
    assert "restarted" in unhealthy["message"]
    assert f"(restartLimit {RESTART_LIMIT})" in unhealthy["message"]


def test_an_operator_killed_while_promoting_finishes_without_an_outage(
    rig: Rig, operator_process: OperatorProcess
) -> None:
    # Given a canary at 100%: every worker runs the new revision
    canary = {"steps": [{"weight": 100}]}
    rig.create(canary)
    revision = rig.change_template(canary)
    eventually(
        lambda: (
            rig.rollout().get("phase") == "Paused" and ready_workers(rig, "thumbs-canary") == TOTAL_REPLICAS
        ),
        what="ten ready canary workers, waiting for promote",
    )
    watch = DeploymentWatch(rig.cluster, rig.namespace)
    try:
        eventually(lambda: watch.ready_after_each, what="the watch's first listing", timeout=30)
        # When it is promoted, and the operator is SIGKILLed while the new stable workers start
        promoted_at = time.monotonic()
        assert kubectl_plugin(rig.cluster, "-n", rig.namespace, "promote", "thumbs").returncode == 0
        eventually(
            lambda: rig.rollout().get("phase") == "Promoting",
            what="the promotion under way",
            timeout=30,
            interval=0.1,
        )
        operator_process.kill()
        killed_at = time.monotonic()
        time.sleep(2)
        # Then while it is down the canary keeps its workers
        assert rig.deployment_replicas("thumbs-canary") is not None
        operator_process.start()
        # And once it is back it finishes the promotion where it was
        eventually(
            lambda: (
                rig.rollout().get("phase") == "Healthy" and rig.deployment_replicas("thumbs-canary") is None
            ),
            what="the promotion finished after the restart",
            timeout=60,
        )
        done = time.monotonic() - killed_at
        eventually(
            lambda: any(kind == "DELETED" for _, kind, _, _ in watch.ready_after_each),
            what="the watch to see the canary go",
            timeout=10,
        )
    finally:
        watch.stop()
    print(f"promotion finished {done:.1f}s after the operator was killed (2s of it down)")
    assert rig.status()["stableRevision"] == revision
    during = [entry for entry in watch.ready_after_each if entry[0] >= promoted_at]
    assert min(ready for _, _, _, ready in during) >= TOTAL_REPLICAS, during
    assert rig.reasons().count("RolloutPromoted") == 1, "the promotion was not repeated"


@pytest.mark.parametrize(
    ("policy", "while_down"),
    [("Pause", "held at step 1"), ("Continue", "on to step 2"), ("Fail", "rolled back")],
)
def test_prometheus_down_during_a_canary_step_follows_on_no_data(
    rig: Rig, policy: str, while_down: str
) -> None:
    # Given a canary step of 6 s whose analysis has workers of both revisions to read
    canary = {
        "steps": [{"weight": 20, "pauseSeconds": 6}, {"weight": 50, "pauseSeconds": 300}],
        "analysis": analysis(
            rig.prometheus,
            intervalSeconds=INTERVAL_SECONDS,
            minSamples=30,
            onNoData=policy,
            consecutiveErrorLimit=30,
        ),
    }
    stable = rig.create(canary)
    rig.start_worker(stable, failure_rate=0.0)
    rig.produce(per_second=100)
    revision = rig.change_template(canary)
    rig.start_worker(revision, failure_rate=0.0)
    eventually(lambda: rig.rollout().get("stepStartedAt"), what="step 1's clock started")

    # When Prometheus goes down during step 1
    rig.prometheus.stop()
    try:
        # Then each analysis is an Error, and onNoData decides what the step does meanwhile
        if while_down == "held at step 1":
            eventually(
                lambda: (
                    rig.rollout().get("phase") == "Paused"
                    and (rig.rollout().get("lastAnalysis") or {}).get("verdict") == "Error"
                ),
                what="step 1 held while Prometheus is down",
                timeout=30,
            )
            time.sleep(2 * INTERVAL_SECONDS)
            assert rig.rollout()["step"] == 1
        elif while_down == "on to step 2":
            eventually(lambda: rig.rollout().get("step") == 2, what="step 2 reached blind", timeout=30)
            assert rig.rollout()["history"][-1]["verdict"] == "Error"
        else:
            eventually(lambda: rig.rollout().get("phase") == "Degraded", what="rolled back", timeout=30)
            assert rig.status()["stableRevision"] == stable
    finally:
        rig.prometheus.start()
        rig.prometheus.set_targets([f"127.0.0.1:{port}" for port in rig.ports])
    back = time.monotonic()
    # And once it is back, a held step goes on
    if while_down == "held at step 1":
        eventually(lambda: rig.rollout().get("step") == 2, what="step 2 after Prometheus is back", timeout=60)
        print(f"onNoData Pause: step 1 ended {time.monotonic() - back:.1f}s after Prometheus was back")
    assert "AnalysisError" in rig.reasons()


def test_a_second_template_change_during_a_rollout_starts_over_at_step_1(rig: Rig) -> None:
    # Given a canary at step 2 of 2
    canary = {"steps": [{"weight": 20}, {"weight": 60}]}
    rig.create(canary)
    first = rig.change_template(canary)
    eventually(lambda: rig.rollout().get("phase") == "Paused", what="step 1 waiting for promote")
    assert kubectl_plugin(rig.cluster, "-n", rig.namespace, "promote", "thumbs").returncode == 0
    eventually(lambda: rig.rollout().get("step") == 2, what="step 2")

    # When the template changes again
    rig.cluster.kubectl(
        "patch",
        "workerpool/thumbs",
        "-n",
        rig.namespace,
        "--type=merge",
        "-p",
        '{"spec": {"template": {"spec": {"containers": [{"name": "worker", "image": "worker:3"}]}}}}',
    )

    # Then the newer revision starts over at step 1, with one Event that says the first was replaced
    eventually(lambda: rig.status().get("canaryRevision") not in (None, first), what="the newer canary")
    rollout = rig.rollout()
    assert (rollout["step"], rollout["weight"]) == (1, 20)
    eventually(lambda: rig.deployment_replicas("thumbs-canary") == 2, what="2 canary replicas at 20%")
    reasons = rig.reasons()
    assert reasons.count("RolloutSuperseded") == 1, reasons
    assert reasons.count("RolloutStarted") == 2, reasons
    superseded = next(event for event in rig.events() if event["reason"] == "RolloutSuperseded")
    assert first in superseded["message"]


def test_a_job_type_changed_during_a_rollout_keeps_the_step(rig: Rig) -> None:
    # Given a canary at step 1, waiting for promote
    canary = {"steps": [{"weight": 20}, {"weight": 60}]}
    rig.create(canary)
    revision = rig.change_template(canary)
    eventually(lambda: rig.rollout().get("phase") == "Paused", what="step 1 waiting for promote")

    # When the JobType's timeout changes (it sets both Deployments' termination grace period)
    rig.cluster.kubectl(
        "patch", "jobtype/demo", "-n", rig.namespace, "--type=merge", "-p", '{"spec": {"timeoutSeconds": 50}}'
    )

    # Then both Deployments take it, and the rollout stays where it was: same revision, same step
    def grace(name: str) -> int:
        body = rig.cluster.kubectl("get", f"deployment/{name}", "-n", rig.namespace, "-o", "json").stdout
        return int(json.loads(body)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])

    eventually(
        lambda: grace("thumbs") > 50 and grace("thumbs-canary") > 50, what="the new grace period on both"
    )
    # (the canary's pods restart with it, so the step holds until they are ready, then waits again)
    eventually(
        lambda: (
            (rig.status().get("canaryRevision"), rig.rollout().get("step"), rig.rollout().get("phase"))
            == (revision, 1, "Paused")
        ),
        what="step 1 of the same revision, waiting for promote",
    )
    assert rig.reasons().count("RolloutStarted") == 1


def test_an_operator_killed_while_a_step_waits_for_ready_keeps_the_deadline(
    rig: Rig, operator_process: OperatorProcess
) -> None:
    # Given a step waiting for canary workers that can never be scheduled, with a 20 s deadline
    deadline = 20
    canary = {"steps": [{"weight": 20, "pauseSeconds": 5}], "progressDeadlineSeconds": deadline}
    stable = rig.create(canary)
    rig.change_template(canary, nodeSelector={"topology.kubernetes.io/zone": "no-such-zone"})
    waiting_since = eventually(lambda: rig.rollout().get("waitingSince"), what="the step waiting")

    # When the operator is SIGKILLed while it waits, and comes back 3 s later
    operator_process.kill()
    time.sleep(3)
    operator_process.start()

    # Then the deadline still counts from when the step began waiting, and it rolls back once
    eventually(lambda: rig.rollout().get("phase") == "Degraded", what="rolled back", timeout=60)
    took = _seconds_since(waiting_since)
    print(f"waiting step rolled back {took:.1f}s after it began waiting (deadline {deadline}s)")
    assert deadline <= took <= deadline + 15
    assert rig.status()["stableRevision"] == stable
    reasons = rig.reasons()
    assert (reasons.count("RolloutStarted"), reasons.count("RolledBack")) == (1, 1), reasons


def test_an_operator_killed_while_analysing_goes_on_without_repeating_the_step(
    rig: Rig, operator_process: OperatorProcess
) -> None:
    # Given step 1 of 2 holding 12 s with analyses every 3 s, and workers of both revisions
    canary = {
        "steps": [{"weight": 20, "pauseSeconds": 12}, {"weight": 50, "pauseSeconds": 300}],
        "analysis": analysis(rig.prometheus, intervalSeconds=INTERVAL_SECONDS, minSamples=30),
    }
    stable = rig.create(canary)
    rig.start_worker(stable, failure_rate=0.0)
    rig.produce(per_second=100)
    revision = rig.change_template(canary)
    rig.start_worker(revision, failure_rate=0.0)
    eventually(lambda: rig.rollout().get("lastAnalysis"), what="step 1's first analysis", timeout=30)

    # When the operator is SIGKILLed between analyses and comes back 3 s later
    operator_process.kill()
    killed_at = time.monotonic()
    time.sleep(3)
    assert rig.rollout()["step"] == 1
    operator_process.start()

    # Then it goes on analysing step 1 and moves to step 2 once: nothing repeated, nothing skipped
    eventually(lambda: rig.rollout().get("step") == 2, what="step 2 after the restart", timeout=60)
    print(f"step 2 reached {time.monotonic() - killed_at:.1f}s after the operator was killed mid-analysis")
    reasons = rig.reasons()
    assert (reasons.count("RolloutStarted"), reasons.count("StepCompleted")) == (1, 1), reasons
    assert "AnalysisPassed" in reasons
    assert rig.rollout()["weight"] == 50
