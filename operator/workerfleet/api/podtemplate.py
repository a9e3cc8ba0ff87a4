"""The workers' pod template: whatever the Pod API allows, except what would reach past the pod.

Being allowed to create a WorkerPool must not mean being allowed to run a root pod on a node. The
fields that would (privilege, capabilities, the node's namespaces, ports and filesystem, a
ServiceAccount or token other than the pool's own, seccomp/AppArmor/SELinux switched off, unsafe
sysctls) are modelled here, each with a rule that refuses it at admission, naming the field and the
fix; every other field of the Pod API passes through as written. What is left is inside the
Pod Security Standards `restricted` profile once the operator adds its defaults
(planners/children.py, which also strips these fields from anything admitted before the rules).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final

from pydantic import ConfigDict, Field

from workerfleet.api.base import ApiModel, FieldErrorReason, Rule
from workerfleet.api.common import DNS_SUBDOMAIN_MAX_LENGTH

MAX_CONTAINERS = 32
MAX_VOLUMES = 128
MAX_PORTS = 64
MAX_PROJECTED_SOURCES = 32
MAX_CAPABILITIES = 64
MAX_SYSCTLS = 32
MAX_TEMPLATE_ANNOTATIONS = 128
NAME_MAX_LENGTH = 253
ENUM_MAX_LENGTH = 64
IMAGE_MAX_LENGTH = 4096
CONTAINER_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CONTAINER_NAME_MAX_LENGTH = 63

ADDABLE_CAPABILITIES: Final = ("NET_BIND_SERVICE",)
"""The one capability the restricted profile lets a container add back after dropping ALL."""
CONFINED_PROFILE_TYPES: Final = ("RuntimeDefault", "Localhost")
"""seccomp and AppArmor profile types that keep the container confined."""
ALLOWED_SELINUX_TYPES: Final = ("container_t", "container_init_t", "container_kvm_t", "container_engine_t")
"""SELinux types the restricted profile allows (besides leaving the type unset)."""
SAFE_SYSCTLS: Final = (
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
)
"""Namespaced sysctls Kubernetes calls safe: they affect the pod alone; the restricted profile allows them."""
APPARMOR_ANNOTATION_PREFIX: Final = "container.apparmor.security.beta.kubernetes.io/"
"""The annotations that set a container's AppArmor profile before the appArmorProfile field existed."""
UNCONFINED_APPARMOR_ANNOTATION: Final = "unconfined"
RESTRICTED_VOLUME_SOURCES: Final = (
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
)
FORBIDDEN_VOLUME_SOURCES: Final = (
    "hostPath",
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "iscsi",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
)
"""Volume sources of the Pod API outside the restricted profile: hostPath reaches the node's
filesystem, the others mount storage by address, bypassing PersistentVolumes and their access control."""


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


def _forbidden(cel: str, message: str, holds: Callable[[Any], bool]) -> Rule[Any]:
    return Rule(cel=cel, message=message, holds=holds, reason=FieldErrorReason.FORBIDDEN)


def _never(message: str) -> Rule[Any]:
    """A rule for a field whose mere presence is refused."""
    return _forbidden("false", message, lambda _: False)


def _not_true(message: str) -> Rule[bool]:
    return _forbidden("!self", message, lambda value: not value)


_OWN_SERVICE_ACCOUNT = (
    "the operator runs each pool under its own ServiceAccount, granted the permissions its JobTypes"
    " declare; remove {field}"
)
_ROOT_USER = "workers may not run as root (user 0); set a non-zero runAsUser, or remove it to run as 65532"
_SECCOMP = "workers may not run without a seccomp profile; use RuntimeDefault or Localhost"
_APPARMOR = "workers may not run without AppArmor; use RuntimeDefault or Localhost"
_SELINUX_IDENTITY = "workers may not choose their SELinux user or role; remove it"
_NOT_RESTRICTED_VOLUME = (
    "the restricted profile allows only configMap, csi, downwardAPI, emptyDir, ephemeral,"
    " persistentVolumeClaim, projected and secret volumes; use one of those"
)
_HOST_PATH = (
    "workers may not mount the node's filesystem; use an emptyDir, configMap, secret or"
    " persistentVolumeClaim volume instead"
)

FreeForm = dict[str, Any]
"""An object of the Pod API passed through as written."""
EnumText = Annotated[str, Field(max_length=ENUM_MAX_LENGTH)]
ConfinedProfileType = Annotated[
    EnumText,
    _forbidden(
        f"self in {_cel_list(CONFINED_PROFILE_TYPES)}",
        _SECCOMP,
        lambda value: value in CONFINED_PROFILE_TYPES,
    ),
]


class PassThrough(ApiModel):
    """A Pod API object: the fields modelled here are checked, every other one is kept as written."""

    model_config = ConfigDict(extra="allow")


class SeccompProfile(PassThrough):
    """The container's seccomp filter."""

    type: ConfinedProfileType
    """RuntimeDefault (the container runtime's filter) or Localhost (a profile on the node);
    Unconfined is refused."""


class AppArmorProfile(PassThrough):
    """The container's AppArmor profile."""

    type: Annotated[
        EnumText,
        _forbidden(
            f"self in {_cel_list(CONFINED_PROFILE_TYPES)}",
            _APPARMOR,
            lambda value: value in CONFINED_PROFILE_TYPES,
        ),
    ]
    """RuntimeDefault or Localhost; Unconfined is refused."""


class SELinuxOptions(PassThrough):
    """SELinux labels of the container; only the level and the container types are the pod's to choose."""

    type: (
        Annotated[
            str,
            Field(max_length=NAME_MAX_LENGTH),
            _forbidden(
                f"self == '' || self in {_cel_list(ALLOWED_SELINUX_TYPES)}",
                "workers may use only the SELinux types container_t, container_init_t, container_kvm_t"
                " and container_engine_t; use one of those or remove type",
                lambda value: value == "" or value in ALLOWED_SELINUX_TYPES,
            ),
        ]
        | None
    ) = None
    """SELinux type: one of container_t, container_init_t, container_kvm_t, container_engine_t."""
    user: Annotated[str, Field(max_length=NAME_MAX_LENGTH), _never(_SELINUX_IDENTITY)] | None = None
    """SELinux user: refused."""
    role: Annotated[str, Field(max_length=NAME_MAX_LENGTH), _never(_SELINUX_IDENTITY)] | None = None
    """SELinux role: refused."""


class WindowsOptions(PassThrough):
    """Windows-specific settings."""

    host_process: (
        Annotated[bool, _not_true("workers may not run as Windows host processes; remove hostProcess")] | None
    ) = None
    """Run as a process on the Windows node: refused."""


class Capabilities(PassThrough):
    """Linux capabilities: the operator drops ALL; only NET_BIND_SERVICE may be added back."""

    add: (
        Annotated[
            list[
                Annotated[
                    str,
                    Field(max_length=ENUM_MAX_LENGTH),
                    _forbidden(
                        f"self in {_cel_list(ADDABLE_CAPABILITIES)}",
                        "workers may add no capability but NET_BIND_SERVICE (all others are dropped);"
                        " remove it",
                        lambda value: value in ADDABLE_CAPABILITIES,
                    ),
                ]
            ],
            Field(max_length=MAX_CAPABILITIES),
        ]
        | None
    ) = None
    """Capabilities to add: NET_BIND_SERVICE at most."""


RunAsUser = Annotated[int, Field(ge=0, le=2**31 - 1), _forbidden("self != 0", _ROOT_USER, lambda u: u != 0)]
RunAsNonRoot = Annotated[
    bool,
    _forbidden(
        "self", "workers must run as a non-root user; remove runAsNonRoot", lambda value: value is True
    ),
]


class Sysctl(PassThrough):
    """A kernel parameter set for the pod."""

    name: Annotated[
        str,
        Field(max_length=NAME_MAX_LENGTH),
        _forbidden(
            f"self in {_cel_list(SAFE_SYSCTLS)}",
            "workers may set only the safe sysctls (kernel.shm_rmid_forced and the net.ipv4 ones"
            " Kubernetes calls safe); remove it",
            lambda value: value in SAFE_SYSCTLS,
        ),
    ]
    """Name of the parameter: only the namespaced ones Kubernetes calls safe."""


class PodSecurityContext(PassThrough):
    """Security settings of the whole pod; the operator fills in the restricted defaults."""

    run_as_user: RunAsUser | None = None
    """User the containers run as; not 0 (root). Absent runs as 65532."""
    run_as_non_root: RunAsNonRoot | None = None
    """Must be true or absent."""
    seccomp_profile: SeccompProfile | None = None
    """seccomp filter; absent uses RuntimeDefault."""
    app_armor_profile: AppArmorProfile | None = None
    """AppArmor profile: RuntimeDefault or Localhost."""
    se_linux_options: SELinuxOptions | None = None
    """SELinux labels: a container type and a level, no user or role."""
    windows_options: WindowsOptions | None = None
    """Windows settings; no host processes."""
    sysctls: Annotated[list[Sysctl], Field(max_length=MAX_SYSCTLS)] | None = None
    """Kernel parameters: only the safe, namespaced ones."""


class SecurityContext(PassThrough):
    """Security settings of one container; the operator fills in the restricted defaults."""

    privileged: (
        Annotated[bool, _not_true("workers may not run privileged containers; remove privileged")] | None
    ) = None
    """Run with all the node's devices and capabilities: refused when true."""
    allow_privilege_escalation: (
        Annotated[
            bool,
            _not_true(
                "workers may not gain more privileges than their parent process; remove"
                " allowPrivilegeEscalation"
            ),
        ]
        | None
    ) = None
    """Refused when true; the operator sets false."""
    capabilities: Capabilities | None = None
    """Capabilities: ALL are dropped, NET_BIND_SERVICE may be added."""
    run_as_user: RunAsUser | None = None
    """User the container runs as; not 0 (root)."""
    run_as_non_root: RunAsNonRoot | None = None
    """Must be true or absent."""
    proc_mount: (
        Annotated[
            EnumText,
            _forbidden(
                "self == 'Default'",
                "workers may not unmask /proc; remove procMount",
                lambda value: value == "Default",
            ),
        ]
        | None
    ) = None
    """Only Default."""
    seccomp_profile: SeccompProfile | None = None
    """seccomp filter: RuntimeDefault or Localhost."""
    app_armor_profile: AppArmorProfile | None = None
    """AppArmor profile: RuntimeDefault or Localhost."""
    se_linux_options: SELinuxOptions | None = None
    """SELinux labels: a container type and a level, no user or role."""
    windows_options: WindowsOptions | None = None
    """Windows settings; no host processes."""


class ContainerPort(PassThrough):
    """A port the container listens on."""

    host_port: (
        Annotated[
            int,
            Field(ge=0, le=65_535),
            _forbidden(
                "self == 0",
                "workers may not open ports on the node; remove hostPort",
                lambda value: value == 0,
            ),
        ]
        | None
    ) = None
    """Refused: a port on the node."""


class Container(PassThrough):
    """A container of the workers' pod (command, env, resources, probes, ... as in the Pod API)."""

    name: Annotated[
        str, Field(min_length=1, max_length=CONTAINER_NAME_MAX_LENGTH, pattern=CONTAINER_NAME_PATTERN)
    ]
    """Name of the container, unique in the pod (a DNS label)."""
    image: Annotated[str, Field(min_length=1, max_length=IMAGE_MAX_LENGTH)]
    """Image the container runs."""
    security_context: SecurityContext | None = None
    """Security settings; the operator adds the restricted defaults."""
    ports: Annotated[list[ContainerPort], Field(max_length=MAX_PORTS)] | None = None
    """Ports the container listens on; none on the node."""


class ProjectedSource(PassThrough):
    """One source of a projected volume."""

    service_account_token: (
        Annotated[
            FreeForm,
            _never(
                "workers may not request ServiceAccount tokens of their own; remove it (the operator"
                " mounts the pool's token when its JobTypes declare permissions)"
            ),
        ]
        | None
    ) = None
    """Refused: the pool's token is the operator's to mount."""


class ProjectedVolume(PassThrough):
    """Several sources (configMaps, secrets, downward API) in one directory."""

    sources: Annotated[list[ProjectedSource], Field(max_length=MAX_PROJECTED_SOURCES)] | None = None
    """The sources; no ServiceAccount tokens."""


NotRestrictedVolume = Annotated[FreeForm, _never(_NOT_RESTRICTED_VOLUME)] | None


class Volume(PassThrough):
    """A volume of the workers' pod: configMap, csi, downwardAPI, emptyDir, ephemeral,
    persistentVolumeClaim, projected or secret."""

    name: Annotated[str, Field(min_length=1, max_length=CONTAINER_NAME_MAX_LENGTH)]
    """Name of the volume, unique in the pod."""
    projected: ProjectedVolume | None = None
    """Projected sources; no ServiceAccount tokens."""
    host_path: Annotated[FreeForm, _never(_HOST_PATH)] | None = None
    """A directory of the node: refused."""
    aws_elastic_block_store: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    azure_disk: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    azure_file: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    cephfs: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    cinder: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    fc: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    flex_volume: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    flocker: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    gce_persistent_disk: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    git_repo: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    glusterfs: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    iscsi: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    nfs: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    photon_persistent_disk: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    portworx_volume: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    quobyte: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    rbd: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    scale_io: NotRestrictedVolume = Field(default=None, alias="scaleIO")
    """Refused: outside the restricted profile."""
    storageos: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""
    vsphere_volume: NotRestrictedVolume = None
    """Refused: outside the restricted profile."""


Containers = Annotated[list[Container], Field(max_length=MAX_CONTAINERS)]


class PodSpec(PassThrough):
    """A Kubernetes PodSpec without access to the node, root or a ServiceAccount of its own; the
    other fields are the Pod API's own."""

    containers: Annotated[Containers, Field(min_length=1)]
    """The worker containers (name, image, command, env, resources, ...)."""
    init_containers: Containers | None = None
    """Containers that run to completion before the workers start; checked like the workers."""
    ephemeral_containers: (
        Annotated[
            list[FreeForm],
            Field(max_length=MAX_CONTAINERS),
            _forbidden(
                "size(self) == 0",
                "ephemeral containers are added to running pods for debugging and cannot be part of a"
                " pod template; remove ephemeralContainers",
                lambda value: len(value) == 0,
            ),
        ]
        | None
    ) = None
    """Refused: the Pod API allows them only on running pods."""
    security_context: PodSecurityContext | None = None
    """Security settings of the pod; the operator adds the restricted defaults."""
    volumes: Annotated[list[Volume], Field(max_length=MAX_VOLUMES)] | None = None
    """Volumes of the restricted profile's kinds; no hostPath, no ServiceAccount tokens."""
    host_network: (
        Annotated[bool, _not_true("workers may not use the node's network; remove hostNetwork")] | None
    ) = None
    """Use the node's network: refused when true."""
    host_pid: (
        Annotated[bool, _not_true("workers may not see the node's processes; remove hostPID")] | None
    ) = Field(default=None, alias="hostPID")
    """Share the node's process namespace: refused when true."""
    host_ipc: (
        Annotated[bool, _not_true("workers may not share the node's IPC namespace; remove hostIPC")] | None
    ) = Field(default=None, alias="hostIPC")
    """Share the node's IPC namespace: refused when true."""
    node_name: (
        Annotated[
            str,
            Field(max_length=DNS_SUBDOMAIN_MAX_LENGTH),
            _never(
                "workers are placed by the scheduler, not bound to a node; remove nodeName (use"
                " nodeSelector or affinity)"
            ),
        ]
        | None
    ) = None
    """Refused: binding to a node skips the scheduler and its checks."""
    service_account_name: (
        Annotated[
            str,
            Field(max_length=DNS_SUBDOMAIN_MAX_LENGTH),
            _never(_OWN_SERVICE_ACCOUNT.format(field="serviceAccountName")),
        ]
        | None
    ) = None
    """Refused: the operator sets the pool's own ServiceAccount."""
    service_account: (
        Annotated[
            str,
            Field(max_length=DNS_SUBDOMAIN_MAX_LENGTH),
            _never(_OWN_SERVICE_ACCOUNT.format(field="serviceAccount")),
        ]
        | None
    ) = None
    """Refused: the deprecated spelling of serviceAccountName."""
    automount_service_account_token: (
        Annotated[
            bool,
            _never(
                "the operator mounts an API token exactly when the pool's JobTypes declare"
                " permissions; remove automountServiceAccountToken"
            ),
        ]
        | None
    ) = None
    """Refused: the operator mounts the pool's token exactly when its JobTypes declare permissions."""


def _confined_apparmor_annotations(annotations: dict[str, str]) -> bool:
    return not any(
        key.startswith(APPARMOR_ANNOTATION_PREFIX) and value == UNCONFINED_APPARMOR_ANNOTATION
        for key, value in annotations.items()
    )


class PodTemplateMeta(PassThrough):
    """Labels and annotations of the workers' pods; the operator adds its own labels."""

    annotations: (
        Annotated[
            dict[str, Annotated[str, Field(description="Value of the annotation.")]],
            Field(max_length=MAX_TEMPLATE_ANNOTATIONS),
            _forbidden(
                f"self.all(k, !k.startsWith('{APPARMOR_ANNOTATION_PREFIX}')"
                f" || self[k] != '{UNCONFINED_APPARMOR_ANNOTATION}')",
                "workers may not run without AppArmor; remove the unconfined AppArmor annotation",
                _confined_apparmor_annotations,
            ),
        ]
        | None
    ) = None
    """Annotations of the pods; no unconfined AppArmor profile."""


class PodTemplate(PassThrough):
    """A Kubernetes PodTemplateSpec for the workers, without the fields that would reach past the pod."""

    metadata: PodTemplateMeta | None = None
    """Labels and annotations of the workers' pods."""
    spec: PodSpec
    """Pod spec of every worker: any field of the Pod API, those listed here checked so the pod stays
    inside the restricted Pod Security Standard. The operator adds the restricted security settings,
    the pool's ServiceAccount and the termination grace period the job types need."""
