"""The pod template's rules: each refuses what would reach past the pod, in Python and in CEL alike,
names the field, and lets everything the restricted profile allows through as written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from tests.api.crd_checks import apply_defaults, rule_failures, schema_errors
from workerfleet.api.podtemplate import FORBIDDEN_VOLUME_SOURCES, PodTemplate, Volume
from workerfleet.api.schema import structural_schema

SCHEMA = structural_schema(PodTemplate)
WORKER = {"name": "worker", "image": "thumbs:1"}


def pod(**spec: Any) -> dict[str, Any]:
    return {"spec": {"containers": [WORKER], **spec}}


def worker(**fields: Any) -> dict[str, Any]:
    return pod(containers=[{**WORKER, **fields}])


def security(**context: Any) -> dict[str, Any]:
    return worker(securityContext=context)


@dataclass(frozen=True)
class Refused:
    name: str
    template: dict[str, Any]
    path: str
    """Where the API server reports it, below spec.template."""
    message: str


ROOT = "workers may not run as root (user 0); set a non-zero runAsUser, or remove it to run as 65532"
SECCOMP = "workers may not run without a seccomp profile; use RuntimeDefault or Localhost"
APPARMOR = "workers may not run without AppArmor; use RuntimeDefault or Localhost"
SELINUX_IDENTITY = "workers may not choose their SELinux user or role; remove it"
OWN_ACCOUNT = (
    "the operator runs each pool under its own ServiceAccount, granted the permissions its JobTypes"
    " declare; remove {}"
)
CONTAINER = "spec.containers[0].securityContext"

REFUSED = [
    Refused(
        "privileged",
        security(privileged=True),
        f"{CONTAINER}.privileged",
        "workers may not run privileged containers; remove privileged",
    ),
    Refused(
        "privileged init container",
        pod(initContainers=[{"name": "setup", "image": "s:1", "securityContext": {"privileged": True}}]),
        "spec.initContainers[0].securityContext.privileged",
        "workers may not run privileged containers; remove privileged",
    ),
    Refused(
        "privilege escalation",
        security(allowPrivilegeEscalation=True),
        f"{CONTAINER}.allowPrivilegeEscalation",
        "workers may not gain more privileges than their parent process; remove allowPrivilegeEscalation",
    ),
    Refused(
        "an added capability",
        security(capabilities={"add": ["NET_BIND_SERVICE", "NET_ADMIN"]}),
        f"{CONTAINER}.capabilities.add[1]",
        "workers may add no capability but NET_BIND_SERVICE (all others are dropped); remove it",
    ),
    Refused(
        "ALL capabilities",
        security(capabilities={"add": ["ALL"]}),
        f"{CONTAINER}.capabilities.add[0]",
        ("workers may add no capability but NET_BIND_SERVICE (all others are dropped); remove it"),
    ),
    Refused("root container", security(runAsUser=0), f"{CONTAINER}.runAsUser", ROOT),
    Refused("root pod", pod(securityContext={"runAsUser": 0}), "spec.securityContext.runAsUser", ROOT),
    Refused(
        "runAsNonRoot false",
        security(runAsNonRoot=False),
        f"{CONTAINER}.runAsNonRoot",
        "workers must run as a non-root user; remove runAsNonRoot",
    ),
    Refused(
        "unconfined seccomp",
        pod(securityContext={"seccompProfile": {"type": "Unconfined"}}),
        "spec.securityContext.seccompProfile.type",
        SECCOMP,
    ),
    Refused(
        "unconfined container seccomp",
        security(seccompProfile={"type": "Unconfined"}),
        f"{CONTAINER}.seccompProfile.type",
        SECCOMP,
    ),
    Refused(
        "unmasked proc",
        security(procMount="Unmasked"),
        f"{CONTAINER}.procMount",
        "workers may not unmask /proc; remove procMount",
    ),
    Refused(
        "host port",
        worker(ports=[{"containerPort": 80}, {"containerPort": 8080, "hostPort": 8080}]),
        "spec.containers[0].ports[1].hostPort",
        "workers may not open ports on the node; remove hostPort",
    ),
    Refused(
        "host process",
        security(windowsOptions={"hostProcess": True}),
        f"{CONTAINER}.windowsOptions.hostProcess",
        "workers may not run as Windows host processes; remove hostProcess",
    ),
    Refused(
        "unconfined AppArmor",
        security(appArmorProfile={"type": "Unconfined"}),
        f"{CONTAINER}.appArmorProfile.type",
        APPARMOR,
    ),
    Refused(
        "unconfined AppArmor annotation",
        {
            "metadata": {
                "annotations": {"container.apparmor.security.beta.kubernetes.io/worker": "unconfined"}
            },
            **pod(),
        },
        "metadata.annotations",
        "workers may not run without AppArmor; remove the unconfined AppArmor annotation",
    ),
    Refused(
        "SELinux super-privileged type",
        pod(securityContext={"seLinuxOptions": {"type": "spc_t"}}),
        "spec.securityContext.seLinuxOptions.type",
        "workers may use only the SELinux types container_t, container_init_t, container_kvm_t and"
        " container_engine_t; use one of those or remove type",
    ),
    Refused(
        "SELinux user",
        security(seLinuxOptions={"user": "system_u"}),
        f"{CONTAINER}.seLinuxOptions.user",
        SELINUX_IDENTITY,
    ),
    Refused(
        "SELinux role",
        security(seLinuxOptions={"role": "system_r"}),
        f"{CONTAINER}.seLinuxOptions.role",
        SELINUX_IDENTITY,
    ),
    Refused(
        "unsafe sysctl",
        pod(securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]}),
        "spec.securityContext.sysctls[0].name",
        "workers may set only the safe sysctls (kernel.shm_rmid_forced and the net.ipv4 ones Kubernetes"
        " calls safe); remove it",
    ),
    Refused(
        "ephemeral containers",
        pod(ephemeralContainers=[{"name": "debug", "image": "busybox"}]),
        "spec.ephemeralContainers",
        "ephemeral containers are added to running pods for debugging and cannot be part of a pod"
        " template; remove ephemeralContainers",
    ),
    Refused(
        "host network",
        pod(hostNetwork=True),
        "spec.hostNetwork",
        "workers may not use the node's network; remove hostNetwork",
    ),
    Refused(
        "host PID",
        pod(hostPID=True),
        "spec.hostPID",
        "workers may not see the node's processes; remove hostPID",
    ),
    Refused(
        "host IPC",
        pod(hostIPC=True),
        "spec.hostIPC",
        "workers may not share the node's IPC namespace; remove hostIPC",
    ),
    Refused(
        "node name",
        pod(nodeName="node-1"),
        "spec.nodeName",
        "workers are placed by the scheduler, not bound to a node; remove nodeName (use nodeSelector or"
        " affinity)",
    ),
    Refused(
        "service account name",
        pod(serviceAccountName="admin"),
        "spec.serviceAccountName",
        OWN_ACCOUNT.format("serviceAccountName"),
    ),
    Refused(
        "deprecated service account",
        pod(serviceAccount="admin"),
        "spec.serviceAccount",
        OWN_ACCOUNT.format("serviceAccount"),
    ),
    Refused(
        "token automount, even off",
        pod(automountServiceAccountToken=False),
        "spec.automountServiceAccountToken",
        "the operator mounts an API token exactly when the pool's JobTypes declare permissions; remove"
        " automountServiceAccountToken",
    ),
    Refused(
        "hostPath volume",
        pod(volumes=[{"name": "tmp", "emptyDir": {}}, {"name": "docker", "hostPath": {"path": "/var/run"}}]),
        "spec.volumes[1].hostPath",
        "workers may not mount the node's filesystem; use an emptyDir, configMap, secret or"
        " persistentVolumeClaim volume instead",
    ),
    Refused(
        "ServiceAccount token source",
        pod(volumes=[{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]),
        "spec.volumes[0].projected.sources[0].serviceAccountToken",
        "workers may not request ServiceAccount tokens of their own; remove it (the operator mounts the"
        " pool's token when its JobTypes declare permissions)",
    ),
    *[
        Refused(
            f"{source} volume",
            pod(volumes=[{"name": "v", source: {}}]),
            f"spec.volumes[0].{source}",
            "the restricted profile allows only configMap, csi, downwardAPI, emptyDir, ephemeral,"
            " persistentVolumeClaim, projected and secret volumes; use one of those",
        )
        for source in FORBIDDEN_VOLUME_SOURCES
        if source != "hostPath"
    ],
]


def _cel_failures(template: dict[str, Any]) -> list[str]:
    defaulted = apply_defaults(SCHEMA, template)
    assert schema_errors(SCHEMA, defaulted) == []
    return rule_failures(SCHEMA, defaulted)


@pytest.mark.parametrize("case", REFUSED, ids=lambda case: case.name)
def test_each_rule_refuses_in_python_and_in_cel_naming_the_field(case: Refused) -> None:
    with pytest.raises(ValidationError) as raised:
        PodTemplate.model_validate(case.template)
    [error] = raised.value.errors()
    assert case.message in error["msg"]
    assert _cel_failures(case.template) == [f"{case.path}: {case.message}"]


ALLOWED = {
    "a bare container": pod(),
    "restricted settings written out": pod(
        securityContext={
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
            "appArmorProfile": {"type": "Localhost", "localhostProfile": "workers"},
            "seLinuxOptions": {"type": "container_t", "level": "s0:c123,c456"},
            "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}],
            "windowsOptions": {"hostProcess": False, "runAsUserName": "worker"},
            "fsGroup": 2000,
        },
        hostNetwork=False,
        hostPID=False,
        hostIPC=False,
        hostUsers=False,
    ),
    "container settings the profile allows": security(
        privileged=False,
        allowPrivilegeEscalation=False,
        capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        runAsNonRoot=True,
        runAsUser=1000,
        procMount="Default",
        seccompProfile={"type": "Localhost", "localhostProfile": "profiles/worker.json"},
        readOnlyRootFilesystem=False,
    ),
    "container ports without hostPort": worker(ports=[{"containerPort": 8080, "hostPort": 0}]),
    "restricted volumes": pod(
        volumes=[
            {"name": "a", "emptyDir": {}},
            {"name": "b", "configMap": {"name": "settings"}},
            {"name": "c", "secret": {"secretName": "keys"}},
            {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "e", "projected": {"sources": [{"configMap": {"name": "x"}}, {"downwardAPI": {}}]}},
            {"name": "f", "csi": {"driver": "secrets-store.csi.k8s.io"}},
        ]
    ),
    "other AppArmor annotations": {
        "metadata": {
            "annotations": {
                "container.apparmor.security.beta.kubernetes.io/worker": "runtime/default",
                "team": "unconfined",
            }
        },
        **pod(),
    },
    "init containers checked like workers": pod(initContainers=[{"name": "setup", "image": "setup:1"}]),
    "no ephemeral containers": pod(ephemeralContainers=[]),
}


@pytest.mark.parametrize("template", ALLOWED.values(), ids=list(ALLOWED))
def test_what_the_restricted_profile_allows_passes_as_written(template: dict[str, Any]) -> None:
    assert PodTemplate.model_validate(template).to_dict() == template
    assert _cel_failures(template) == []


@pytest.mark.parametrize(
    ("container", "missing"),
    [({"name": "worker"}, "image"), ({"image": "thumbs:1"}, "name"), ({"name": "w", "image": ""}, "image")],
)
def test_a_container_needs_a_name_and_an_image(container: dict[str, Any], missing: str) -> None:
    with pytest.raises(ValidationError) as raised:
        PodTemplate.model_validate(pod(containers=[container]))
    assert [error["loc"][-1] for error in raised.value.errors()] == [missing]
    assert schema_errors(SCHEMA, pod(containers=[container])) != []


def test_every_forbidden_volume_source_is_a_field_of_the_volume() -> None:
    wire_names = {field.alias or name for name, field in Volume.model_fields.items()}
    assert set(FORBIDDEN_VOLUME_SOURCES) <= wire_names
    volume = SCHEMA["properties"]["spec"]["properties"]["volumes"]["items"]
    assert set(FORBIDDEN_VOLUME_SOURCES) <= set(volume["properties"])


def test_host_namespaces_keep_their_kubernetes_spelling() -> None:
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert {"hostPID", "hostIPC", "hostNetwork"} <= set(spec)
    assert "hostPid" not in spec


def test_every_container_list_and_template_map_is_bounded() -> None:
    # The API server estimates a rule's cost from these bounds; unbounded, the CRD would not install.
    spec = SCHEMA["properties"]["spec"]["properties"]
    for name in ("containers", "initContainers", "ephemeralContainers", "volumes"):
        assert "maxItems" in spec[name], name
    assert "maxProperties" in SCHEMA["properties"]["metadata"]["properties"]["annotations"]
