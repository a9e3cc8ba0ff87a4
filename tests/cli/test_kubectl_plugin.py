"""`kubectl workerfleet`: the view it prints and the writes it sends, against a recording fake API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest

from workerfleet.cli.kubectl_plugin import (
    action_patch,
    build_parser,
    main,
    progress_bar,
    render_status,
    show_status,
)
from workerfleet.kube.client import Kube
from workerfleet.planners.rollout import Action


def pool(phase: str = "Progressing", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "thumbs", "namespace": "media"},
        "spec": {"rollout": {"canary": {"steps": [{"weight": 10}, {"weight": 50}, {"weight": 100}]}}},
        "status": {
            "replicas": 10,
            "canaryReplicas": 5,
            "stableRevision": "aaa",
            "canaryRevision": "bbb",
            "rollout": {
                "phase": phase,
                "step": 2,
                "weight": 50,
                "message": "step 2 of 3",
                "lastAnalysis": {
                    "time": "2026-01-01T00:00:00Z",
                    "verdict": "Pass",
                    "canarySamples": 150,
                    "stableSamples": 160,
                    "canaryErrorRate": 0.012,
                    "stableErrorRate": 0.01,
                },
            },
            **status,
        },
    }


class FakeKube:
    def __init__(
        self, stored: dict[str, Any] | None, job_types: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.stored = stored
        self.job_types = job_types or {}
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    def read(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "JobType":
            assert namespace == "media"
            return self.job_types.get(name)
        assert (kind, namespace, name) == ("WorkerPool", "media", "thumbs")
        return self.stored

    def patch_pool(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patches.append((namespace, name, patch))


def run(argv: list[str], fake: FakeKube) -> int:
    return main(["-n", "media", *argv], api=cast(Kube, fake))


@pytest.mark.parametrize(("weight", "filled"), [(0, 0), (10, 2), (50, 10), (100, 20), (130, 20)])
def test_progress_bar(weight: int, filled: int) -> None:
    assert progress_bar(weight).count("#") == filled


def test_status_shows_revisions_weights_step_and_last_analysis() -> None:
    view = render_status(pool(), NOW)
    assert "media/thumbs: Progressing" in view
    assert "stable  aaa          5 replicas" in view
    assert "canary  bbb          5 replicas" in view
    assert "step    2 of 3" in view
    assert "50% canary" in view
    assert "canary 1.2% of 150 jobs, stable 1.0% of 160 jobs" in view


@pytest.mark.parametrize(("phase", "code"), [("Progressing", 0), ("Healthy", 0), ("Degraded", 1)])
def test_status_exits_non_zero_when_degraded(
    phase: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["status", "thumbs"], FakeKube(pool(phase))) == code
    assert phase in capsys.readouterr().out


def test_a_missing_pool_is_reported() -> None:
    fake = FakeKube(None)
    assert run(["status", "thumbs"], fake) == 2
    assert run(["abort", "thumbs"], fake) == 2
    assert fake.patches == []


@pytest.mark.parametrize(
    ("argv", "action"),
    [
        (["promote", "thumbs"], "promote"),
        (["promote", "thumbs", "--full"], "promote-full"),
        (["abort", "thumbs"], "abort"),
        (["retry", "thumbs"], "retry"),
    ],
)
def test_actions_set_the_annotation_with_a_fresh_token(argv: list[str], action: str) -> None:
    fake = FakeKube(pool("Degraded" if action == "retry" else "Progressing"))
    assert run(argv, fake) == 0
    assert run(argv, fake) == 0
    (_, _, first), (_, _, second) = fake.patches
    values = [p["metadata"]["annotations"]["workerfleet.dev/rollout-action"] for p in (first, second)]
    assert all(value.startswith(f"{action}/bbb/") for value in values), "it names the canary revision"
    assert values[0] != values[1], "every request carries its own token, so the operator acts on each"


@pytest.mark.parametrize(("verb", "paused"), [("pause", True), ("resume", False)])
def test_pause_and_resume_set_spec_paused(verb: str, paused: bool) -> None:
    fake = FakeKube(pool())
    assert run([verb, "thumbs"], fake) == 0
    assert fake.patches == [("media", "thumbs", {"spec": {"paused": paused}})]


def test_action_patch_format() -> None:
    patch = action_patch(Action.ABORT, "bbb", datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    assert patch == {
        "metadata": {"annotations": {"workerfleet.dev/rollout-action": "abort/bbb/20260102T030405.000006Z"}}
    }


@pytest.mark.parametrize(
    ("argv", "stored"),
    [
        (["promote", "thumbs", "--full"], pool("Healthy", canaryRevision=None)),
        (["promote", "thumbs"], pool("Degraded")),
        (["abort", "thumbs"], pool("Healthy", canaryRevision=None)),
        (["retry", "thumbs"], pool("Progressing")),
    ],
    ids=[
        "promote --full with no canary",
        "promote a rolled-back canary",
        "abort nothing",
        "retry a running one",
    ],
)
def test_an_action_with_nothing_to_act_on_is_refused_and_not_sent(
    argv: list[str], stored: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeKube(stored)
    assert run(argv, fake) == 3
    assert fake.patches == []
    assert "nothing to act on" in capsys.readouterr().out


def test_status_shows_each_job_type_served_with_its_priority(capsys: pytest.CaptureFixture[str]) -> None:
    stored = pool()
    stored["spec"]["jobTypes"] = ["resize", "thumbnail", "gone"]
    job_types = {
        "resize": {"spec": {"lane": "fast", "timeoutSeconds": 5, "priority": "high"}},
        "thumbnail": {"spec": {"lane": "fast", "timeoutSeconds": 5}},
    }
    assert run(["status", "thumbs"], FakeKube(stored, job_types)) == 0
    assert "job types  resize (high), thumbnail (normal), gone (not found)" in capsys.readouterr().out


def _watched(views: list[dict[str, Any]], **options: Any) -> list[str]:
    """What `status --watch` writes while the pool goes through `views`, one per poll, until Ctrl-C."""
    fake = FakeKube(views[0])
    written: list[str] = []
    naps = 0

    def sleep(_: float) -> None:
        nonlocal naps
        naps += 1
        if naps == len(views):
            raise KeyboardInterrupt
        fake.stored = views[naps]

    args = build_parser().parse_args(["-n", "media", "status", "thumbs", "--watch"])
    with pytest.raises(KeyboardInterrupt):
        show_status(args, cast(Kube, fake), written.append, sleep, **options)
    return written


def test_watch_prints_each_change_once_until_interrupted() -> None:
    printed = _watched([pool(), pool(), pool("Degraded")])
    assert len(printed) == 2
    assert "Progressing" in printed[0]
    assert "Degraded" in printed[1]


NOW = datetime(2026, 1, 1, 0, 10, 0, tzinfo=UTC)


def paused_pool(pause_seconds: int | None, started: str | None = "2026-01-01T00:05:00Z") -> dict[str, Any]:
    body = pool()
    step: dict[str, Any] = {"weight": 50}
    if pause_seconds is not None:
        step["pauseSeconds"] = pause_seconds
    body["spec"]["rollout"]["canary"] = {
        "steps": [{"weight": 10}, step, {"weight": 100}],
        "analysis": {
            "prometheus": {"address": "http://127.0.0.1:9090"},
            "maxErrorRate": 0.02,
            "maxIncreaseOverStable": 0.01,
            "minSamples": 100,
        },
    }
    if started is not None:
        body["status"]["rollout"]["stepStartedAt"] = started
    return body


@pytest.mark.parametrize(
    ("pause_seconds", "started", "expected"),
    [
        (600, "2026-01-01T00:05:00Z", "pause 5m00s left"),
        (330, "2026-01-01T00:05:00Z", "pause 30s left"),
        (60, "2026-01-01T00:05:00Z", "pause over, next step due"),
        (None, "2026-01-01T00:05:00Z", "held until promoted"),
        (600, None, "waiting for the canary workers to be ready"),
    ],
)
def test_the_progress_line_shows_time_left_in_the_pause(
    pause_seconds: int | None, started: str | None, expected: str
) -> None:
    view = render_status(paused_pool(pause_seconds, started), NOW)
    [line] = [line for line in view.splitlines() if line.startswith("  step    ")]
    assert "step    2 of 3" in line
    assert "50% canary" in line
    assert expected in line


def test_the_analysis_is_shown_against_its_thresholds() -> None:
    view = render_status(paused_pool(600), NOW)
    assert "canary 1.2% of 150 jobs, stable 1.0% of 160 jobs" in view
    assert (
        "thresholds: canary at most 2.0%, at most 1.0 points over stable, 100 jobs before a verdict" in view
    )


def test_the_pool_degraded_condition_exits_non_zero_even_without_a_rollout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = pool("Healthy")
    body["status"]["conditions"] = [
        {
            "type": "Degraded",
            "status": "True",
            "reason": "JobTypeInvalid",
            "message": "JobType spec not usable",
        }
    ]
    assert run(["status", "thumbs"], FakeKube(body)) == 1
    assert "Degraded: JobTypeInvalid: JobType spec not usable" in capsys.readouterr().out


def _watch(terminal: bool) -> list[str]:
    views = [paused_pool(600), paused_pool(600), paused_pool(600)]
    views[2]["status"]["rollout"]["step"] = 3
    return _watched(views, terminal=terminal, now=lambda: NOW)


def test_watch_redraws_in_place_on_a_terminal() -> None:
    written = _watch(terminal=True)
    assert len(written) == 3  # every tick, so the pause counts down
    lines = written[0].count("\n") + 1
    assert not written[0].startswith("\x1b[")
    assert all(view.startswith(f"\x1b[{lines}F\x1b[J") for view in written[1:])


def test_watch_prints_plain_lines_when_piped() -> None:
    written = _watch(terminal=False)
    assert len(written) == 2  # only when the pool changed
    assert not any("\x1b" in view for view in written)
    assert "step    3 of 3" in written[1]


@pytest.mark.parametrize("verb", ["reset", "open"])
def test_breaker_sets_the_action_annotation_with_a_fresh_token(verb: str) -> None:
    stored = pool()
    stored["spec"]["circuitBreaker"] = {"maxFailureRatio": 0.5}
    fake = FakeKube(stored)
    assert run(["breaker", verb, "thumbs"], fake) == 0
    assert run(["breaker", verb, "thumbs"], fake) == 0
    values = [
        patch["metadata"]["annotations"]["workerfleet.dev/breaker-action"] for _, _, patch in fake.patches
    ]
    assert all(value.startswith(f"{verb}/") for value in values)
    assert values[0] != values[1]


def test_breaker_on_a_pool_without_one_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeKube(pool())
    assert run(["breaker", "reset", "thumbs"], fake) == 3
    assert fake.patches == []
    assert "no spec.circuitBreaker" in capsys.readouterr().out
