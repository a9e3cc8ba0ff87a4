"""The guarantee that a pool's author holds what the pool gets is the chart's admission policy; the
operator refuses to serve pools where it cannot see that policy in force (fail closed).

A ValidatingAdmissionPolicy cannot stamp who wrote a pool, and `managedFields` names field managers,
not identities: the operator cannot re-check a pool's author afterwards. So it checks, on its first
reconcile and then at most once a minute, that the API server serves ValidatingAdmissionPolicy and
that each policy it was given exists with a binding of the same name that denies, everywhere. While one is
missing, every pool is Ready=False (AdmissionPolicyMissing, with a Warning Event) and no child is
written: a Deployment could carry a Secret its author could not read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workerfleet.kube.client import Kube
from workerfleet.kube.rest import ApiError

logger = logging.getLogger(__name__)

ADMISSION_API_VERSION = "admissionregistration.k8s.io/v1"
POLICY_KIND = "ValidatingAdmissionPolicy"
BINDING_KIND = "ValidatingAdmissionPolicyBinding"
RECHECK_SECONDS = 60.0
"""How long a verdict on the policies stands: a policy deleted while serving stops the pools, and
one installed later lets them be served, within this time."""
DENY = "Deny"


@dataclass(frozen=True)
class AdmissionSettings:
    """The admission policies that must be in force before any pool is served (`--admission-policy`);
    none with `enforced=False` (`--no-admission-policy`: a development cluster, pools served unchecked)."""

    policies: tuple[str, ...] = ()
    enforced: bool = True


def policy_problem(
    name: str, policy: Mapping[str, Any] | None, binding: Mapping[str, Any] | None
) -> str | None:
    """Why the policy `name` is not in force, as a person reads it; None when it is."""
    if policy is None:
        return (
            f"ValidatingAdmissionPolicy {name} not found (Kubernetes 1.30 or later serves it; the chart"
            " installs it with admission.enabled): pools are not served, since nothing would check that"
            " their authors may read the Secrets and use the JobTypes they name"
        )
    if binding is None:
        return f"ValidatingAdmissionPolicyBinding {name} not found: policy {name} is not enforced"
    spec = binding.get("spec") or {}
    if spec.get("policyName") != name or DENY not in (spec.get("validationActions") or []):
        return f"ValidatingAdmissionPolicyBinding {name} does not deny by policy {name}: it is not enforced"
    if spec.get("matchResources"):
        return (
            f"ValidatingAdmissionPolicyBinding {name} is limited by matchResources: policy {name} is not"
            " enforced on every pool; remove matchResources (the chart's binding has none)"
        )
    return None


def policies_problem(settings: AdmissionSettings, api: Kube) -> str | None:
    """Why the pools may not be served now (the first policy not in force), None when they may."""
    if not settings.enforced:
        return None
    if not settings.policies:
        return "no admission policy given: run the operator with --admission-policy (the chart does)"
    for name in settings.policies:
        try:
            policy = api.read(ADMISSION_API_VERSION, POLICY_KIND, "", name)
            binding = api.read(ADMISSION_API_VERSION, BINDING_KIND, "", name) if policy else None
        except ApiError as error:
            return f"ValidatingAdmissionPolicy {name} could not be read: {error.message or error}"
        problem = policy_problem(name, policy, binding)
        if problem is not None:
            return problem
    return None


class AdmissionGuard:
    """The last verdict on the admission policies, renewed when it is older than RECHECK_SECONDS."""

    def __init__(self, settings: AdmissionSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._verdict: tuple[float, str | None] | None = None

    def problem(self, judge: Callable[[AdmissionSettings], str | None]) -> str | None:
        """Why no pool may be served now (`judge` asks the API server when the verdict is stale);
        None when the policies are in force, or not enforced."""
        with self._lock:
            now = self._clock()
            if self._verdict is None or now - self._verdict[0] >= RECHECK_SECONDS:
                before = self._verdict[1] if self._verdict is not None else None
                problem = judge(self.settings)
                if problem is not None and problem != before:
                    logger.warning("serving no pool: %s", problem)
                self._verdict = (now, problem)
            return self._verdict[1]


_guard = AdmissionGuard(AdmissionSettings())


def configure(settings: AdmissionSettings) -> None:
    """Set at start-up, before any handler runs."""
    global _guard  # noqa: PLW0603  (one setting per process, from the command line)
    _guard = AdmissionGuard(settings)
    if not settings.enforced:
        logger.warning(
            "--no-admission-policy: pools are served without checking that their authors hold what"
            " they name (Secrets, claims, JobTypes); for development clusters only"
        )


def admission_problem(api: Kube) -> str | None:
    """Why no pool may be served now (reconcile's gate); None when admission is in force."""
    return _guard.problem(lambda settings: policies_problem(settings, api))
