"""The workers' pod stays inside the restricted Pod Security Standard whatever the template says:
a template admitted before the template rules existed (or read back from a Deployment's annotation)
loses what the rules refuse, and an admissible template is left exactly as written."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.crd_checks import rule_failures
from tests.api.test_pod_template import ALLOWED, REFUSED, WORKER, Refused, pod, security
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.api.podtemplate import (
    ADDABLE_CAPABILITIES,
    CONFINED_PROFILE_TYPES,
    FORBIDDEN_VOLUME_SOURCES,
    PodTemplate,
)
from workerfleet.api.schema import structural_schema
from workerfleet.api.workerpool import WorkerPoolSpec
from workerfleet.planners.children import (
    Manifest,
    PoolRef,
    Workers,
    plan_children,
    restricted_spec,
    restricted_template,
)

POOL = PoolRef(name="thumbs", namespace="media", uid="1234")
SCHEMA = structural_schema(PodTemplate)
QUEUE = {"redis": {"address": "redis:6379", "list": "jobs:resize"}}


def job_types(permissions: list[dict[str, Any]] | None = None) -> dict[str, JobTypeSpec]:
    spec = {"lane": "normal", "timeoutSeconds": 60, "permissions": permissions or []}
    return {"resize-image": JobTypeSpec.model_validate(spec)}


def deployed_pod(template: dict[str, Any], permissions: list[dict[str, Any]] | None = None) -> Manifest:
    """The pod template of the stable Deployment, the template running as the stable track as it would
    when read back from a Deployment's annotation (where the API models never looked at it)."""
    spec = WorkerPoolSpec.model_validate({"jobTypes": ["resize-image"], "template": pod(), "queue": QUEUE})
    workers = Workers(stable_template=template, stable_replicas=1)
    [deployment] = [
        m
        for m in plan_children(POOL, spec, job_types(permissions), workers).apply
        if m["kind"] == "Deployment"
    ]
    pod_template: Manifest = deployment["spec"]["template"]
    return pod_template


def restricted_profile_violations(template: Manifest) -> list[str]:
    """What the restricted Pod Security Standard refuses in a pod, checked independently of the models."""
    spec, found = template["spec"], []
    pod_context = spec.get("securityContext", {})
    for name in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(name):
            found.append(name)
    found += [
        f"volume {v['name']}" for v in spec.get("volumes", []) if set(v) & set(FORBIDDEN_VOLUME_SOURCES)
    ]
    if spec.get("ephemeralContainers"):
        found.append("ephemeralContainers")
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        context = container.get("securityContext", {})
        where = container["name"]
        if context.get("privileged"):
            found.append(f"{where}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            found.append(f"{where}: capabilities not dropped")
        if set(context.get("capabilities", {}).get("add", [])) - set(ADDABLE_CAPABILITIES):
            found.append(f"{where}: capabilities added")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"{where}: runAsNonRoot")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{where}: root")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        if seccomp.get("type") not in CONFINED_PROFILE_TYPES:
            found.append(f"{where}: seccomp")
        if context.get("procMount", "Default") != "Default":
            found.append(f"{where}: procMount")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            found.append(f"{where}: hostPort")
    return found


@pytest.mark.parametrize("case", REFUSED, ids=lambda case: case.name)
def test_a_refused_template_becomes_an_admissible_one(case: Refused) -> None:
    restricted = restricted_template(case.template)
    PodTemplate.model_validate(restricted)
    assert rule_failures(SCHEMA, restricted) == []


@pytest.mark.parametrize("template", ALLOWED.values(), ids=list(ALLOWED))
def test_an_admissible_template_is_left_as_written(template: dict[str, Any]) -> None:
    assert restricted_template(template) == template


@pytest.mark.parametrize("case", REFUSED, ids=lambda case: case.name)
def test_the_deployed_pod_is_restricted_whatever_the_template_says(case: Refused) -> None:
    deployed = deployed_pod(case.template)
    assert restricted_profile_violations(deployed) == []
    PodTemplate.model_validate({**deployed, "spec": _without_operator_fields(deployed["spec"])})


def _without_operator_fields(spec: Manifest) -> Manifest:
    return {k: v for k, v in spec.items() if k not in ("serviceAccountName", "automountServiceAccountToken")}


EVERYTHING_AT_ONCE = {
    "metadata": {
        "annotations": {
            "container.apparmor.security.beta.kubernetes.io/worker": "unconfined",
            "team": "media",
        }
    },
    "spec": {
        "hostNetwork": True,
        "hostPID": True,
        "hostIPC": True,
        "hostUsers": False,
        "nodeName": "control-plane",
        "serviceAccountName": "admin",
        "serviceAccount": "admin",
        "automountServiceAccountToken": True,
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "seccompProfile": {"type": "Unconfined"},
            "seLinuxOptions": {"type": "spc_t", "user": "system_u", "level": "s0"},
            "sysctls": [
                {"name": "kernel.msgmax", "value": "1"},
                {"name": "net.ipv4.tcp_syncookies", "value": "1"},
            ],
        },
        "initContainers": [{"name": "setup", "image": "setup:1", "securityContext": {"privileged": True}}],
        "containers": [
            {
                **WORKER,
                "ports": [{"containerPort": 8080, "hostPort": 8080}],
                "securityContext": {
                    "privileged": True,
                    "allowPrivilegeEscalation": True,
                    "capabilities": {"add": ["SYS_ADMIN", "NET_BIND_SERVICE"], "drop": ["NET_RAW"]},
                    "runAsUser": 0,
                    "procMount": "Unmasked",
                    "appArmorProfile": {"type": "Unconfined"},
                    "windowsOptions": {"hostProcess": True},
                    "readOnlyRootFilesystem": False,
                },
                "volumeMounts": [
                    {"name": "root", "mountPath": "/host"},
                    {"name": "token", "mountPath": "/t"},
                ],
            }
        ],
        "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
        "volumes": [
            {"name": "root", "hostPath": {"path": "/"}},
            {
                "name": "token",
                "projected": {
                    "sources": [{"serviceAccountToken": {"path": "t"}}, {"configMap": {"name": "c"}}]
                },
            },
        ],
    },
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # the node's namespaces, a node of its own, ephemeral containers: gone; hostUsers: false is kept
        (("spec", "hostNetwork"), None),
        (("spec", "hostPID"), None),
        (("spec", "hostIPC"), None),
        (("spec", "hostUsers"), False),
        (("spec", "nodeName"), None),
        (("spec", "ephemeralContainers"), None),
        # the pool's own ServiceAccount, and a token only because its job types ask for API access
        (("spec", "serviceAccountName"), "thumbs-worker"),
        (("spec", "serviceAccount"), None),
        (("spec", "automountServiceAccountToken"), False),
        # root and unconfined settings give way to the restricted defaults
        (("spec", "securityContext", "runAsUser"), 65532),
        (("spec", "securityContext", "runAsNonRoot"), True),
        (("spec", "securityContext", "seccompProfile"), {"type": "RuntimeDefault"}),
        (("spec", "securityContext", "seLinuxOptions"), {"level": "s0"}),
        (("spec", "securityContext", "sysctls"), [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]),
        (("metadata", "annotations", "container.apparmor.security.beta.kubernetes.io/worker"), None),
        (("metadata", "annotations", "team"), "media"),
        (
            ("spec", "containers", 0, "securityContext"),
            {
                "allowPrivilegeEscalation": False,
                "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                "readOnlyRootFilesystem": False,
                "runAsNonRoot": True,
                "windowsOptions": {},
            },
        ),
        (("spec", "initContainers", 0, "securityContext", "privileged"), None),
        (
            ("spec", "containers", 0, "ports"),
            [{"containerPort": 8080}, {"name": "metrics", "containerPort": 8000, "protocol": "TCP"}],
        ),
        # volumes the pod may not have become empty directories, so the mounts still resolve
        (("spec", "volumes", 0), {"name": "root", "emptyDir": {}}),
        (("spec", "volumes", 1), {"name": "token", "projected": {"sources": [{"configMap": {"name": "c"}}]}}),
    ],
)
def test_what_the_deployment_runs_for_a_template_asking_for_everything(
    path: tuple[str | int, ...], expected: Any
) -> None:
    value: Any = deployed_pod(EVERYTHING_AT_ONCE)
    for step in path:
        value = value.get(step) if isinstance(value, dict) else value[step]
        if value is None:
            break
    assert value == expected


def test_a_template_asking_for_everything_runs_restricted() -> None:
    assert restricted_profile_violations(deployed_pod(EVERYTHING_AT_ONCE)) == []


def test_the_token_follows_the_job_types_not_the_template() -> None:
    read = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    template = pod(automountServiceAccountToken=False, serviceAccountName="admin")
    assert deployed_pod(template, read)["spec"]["automountServiceAccountToken"] is True
    assert deployed_pod(template, read)["spec"]["serviceAccountName"] == "thumbs-worker"


def test_a_pool_admitted_before_the_rules_still_parses_without_what_they_refuse() -> None:
    stored = {"jobTypes": ["resize-image"], "template": EVERYTHING_AT_ONCE, "queue": QUEUE}
    spec = WorkerPoolSpec.model_validate(restricted_spec(stored))
    assert spec.template.spec.host_network is None
    assert stored["template"] is EVERYTHING_AT_ONCE  # the stored object is not touched
    assert EVERYTHING_AT_ONCE["spec"]["hostNetwork"] is True  # type: ignore[index]


def test_user_capability_drops_are_subsumed_by_all() -> None:
    deployed = deployed_pod(security(capabilities={"drop": ["NET_RAW"]}))
    assert deployed["spec"]["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
