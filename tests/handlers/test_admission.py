"""Pools are served only while the chart's admission policies are in force (fail closed)."""

from __future__ import annotations

from typing import Any

from workerfleet.handlers.admission import RECHECK_SECONDS, AdmissionGuard, AdmissionSettings, policy_problem

POLICY = {"metadata": {"name": "wf-pool-author"}}


def _binding(policy: str = "wf-pool-author", actions: tuple[str, ...] = ("Deny",)) -> dict[str, Any]:
    return {"spec": {"policyName": policy, "validationActions": list(actions)}}


def test_a_policy_bound_to_deny_is_in_force() -> None:
    assert policy_problem("wf-pool-author", POLICY, _binding()) is None


def test_a_missing_policy_names_itself_and_the_kubernetes_version() -> None:
    problem = policy_problem("wf-pool-author", None, None)
    assert problem is not None
    assert "ValidatingAdmissionPolicy wf-pool-author not found" in problem
    assert "1.30" in problem


def test_a_policy_without_a_denying_binding_is_not_in_force() -> None:
    assert "Binding wf-pool-author not found" in (policy_problem("wf-pool-author", POLICY, None) or "")
    audit_only = policy_problem("wf-pool-author", POLICY, _binding(actions=("Audit", "Warn")))
    assert audit_only is not None
    assert "does not deny" in audit_only
    elsewhere = policy_problem("wf-pool-author", POLICY, _binding(policy="something-else"))
    assert elsewhere is not None
    narrowed = {
        "spec": {**_binding()["spec"], "matchResources": {"namespaceSelector": {"matchLabels": {"a": "b"}}}}
    }
    assert "limited by matchResources" in (policy_problem("wf-pool-author", POLICY, narrowed) or "")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_verdict_is_asked_again_once_it_is_stale() -> None:
    clock = _Clock()
    guard = AdmissionGuard(AdmissionSettings(policies=("wf-pool-author",)), clock=clock)
    answers = ["policy missing", None]
    asked: list[AdmissionSettings] = []

    def judge(settings: AdmissionSettings) -> str | None:
        asked.append(settings)
        return answers[len(asked) - 1]

    assert guard.problem(judge) == "policy missing"
    clock.now = RECHECK_SECONDS - 1
    assert guard.problem(judge) == "policy missing"  # still the first verdict: one request a minute
    assert len(asked) == 1
    clock.now = RECHECK_SECONDS
    assert guard.problem(judge) is None  # installed since: the pools are served again
    assert asked == [guard.settings, guard.settings]
