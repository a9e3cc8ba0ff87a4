"""The objects a WorkerPool owns, computed from its spec and its JobTypes: pure, no I/O.

Every child carries an ownerReference to the pool (the garbage collector deletes it with the pool)
and the common labels. The reconciler applies `ChildPlan.apply` and deletes `ChildPlan.delete`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workerfleet.api.base import API_VERSION
from workerfleet.api.common import SecretKeySelector
from workerfleet.api.jobtype import JobTypeSpec, Lane, Permission
from workerfleet.api.podtemplate import (
    ADDABLE_CAPABILITIES,
    ALLOWED_SELINUX_TYPES,
    APPARMOR_ANNOTATION_PREFIX,
    CONFINED_PROFILE_TYPES,
    FORBIDDEN_VOLUME_SOURCES,
    SAFE_SYSCTLS,
    UNCONFINED_APPARMOR_ANNOTATION,
)
from workerfleet.api.queue_kinds import kind_of
from workerfleet.api.worker_contract import (
    HEALTHZ_PATH,
    METRICS_PORT_NAME,
    POLICIES_DIRECTORY,
    POLICIES_FILE,
    POLICIES_PATH,
    READYZ_PATH,
    WorkerEnv,
)
from workerfleet.api.workerpool import Autoscaling, AutoscalingEngine, Worker, WorkerPoolSpec, WorkerRuntime
from workerfleet.planners.keda import KEDA_API_VERSION, keda_objects

Manifest = dict[str, Any]

TMP_DIRECTORY = "/tmp"  # noqa: S108  (an emptyDir of the pod's own, not the host's /tmp)
NON_ROOT_ID = 65532
DRAIN_MARGIN_SECONDS = 15
"""Added to the longest attempt timeout: time to stop taking jobs and requeue the rest after SIGTERM."""
QUEUE_DEPTH_METRIC = "workerfleet_queue_depth"
MANAGED_BY = "workerfleet"
POOL_LABEL = "workerfleet.dev/pool"
REVISION_LABEL = "workerfleet.dev/revision"
TRACK_LABEL = "workerfleet.dev/track"
STABLE_TRACK = "stable"
CANARY_TRACK = "canary"
POLICIES_CHECKSUM_ANNOTATION = "workerfleet.dev/policies-checksum"
"""On the workers' pod template: a hash of the policies ConfigMap, so a JobType change rolls the pods
(the runtime reads the policies once, at start)."""
LIVENESS_PROBE: dict[str, Any] = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
"""With the runtime's 60 s stall limit: a stuck worker is restarted within about 90 s."""
READINESS_PROBE: dict[str, Any] = {"periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 2}
LANE_RESOURCES: dict[Lane, Manifest] = {
    Lane.FAST: {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
    Lane.NORMAL: {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    Lane.HEAVY: {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
}
"""The worker container's resources when the template sets none: requests so the scheduler places
and a ResourceQuota counts the pods, a memory limit so a leak ends in the worker, not on the node.
No CPU limit: throttling a worker that could use an idle core only slows its jobs."""
LANE_ORDER = (Lane.FAST, Lane.NORMAL, Lane.HEAVY)
DEFAULT_LANE = Lane.NORMAL
"""For a pool none of whose JobTypes is found (yet)."""
SIDE_CONTAINER_LANE = Lane.FAST
"""Init and sidecar containers get the smallest default: the work is the worker container's."""
POD_TEMPLATE_ANNOTATION = "workerfleet.dev/pod-template"
"""On each worker Deployment: the pool's pod template as written, so the stable Deployment can be
rendered again while a canary of a newer template runs beside it."""


@dataclass(frozen=True)
class PoolRef:
    """The identity of the owning WorkerPool."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class ChildKey:
    """Enough to address one child object."""

    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Workers:
    """Which pod templates run with how many replicas: the stable track, and a canary beside it."""

    stable_template: Mapping[str, Any]
    stable_replicas: int
    canary_template: Mapping[str, Any] | None = None
    """None: no canary Deployment (it is deleted)."""
    canary_replicas: int = 0


@dataclass(frozen=True)
class ChildPlan:
    apply: list[Manifest]
    delete: list[ChildKey] = field(default_factory=list)


def revision_of(template: Mapping[str, Any]) -> str:
    """A stable hash of the pod template: equal templates, equal revisions, whatever the key order."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def selector_labels(pool: str, track: str = STABLE_TRACK) -> dict[str, str]:
    """Labels that select the pool's workers of one track; a Deployment's selector can never change."""
    return {POOL_LABEL: pool, TRACK_LABEL: track}


def pool_selector(pool: str) -> str:
    """The label selector of every worker of the pool, for the scale subresource."""
    return f"{POOL_LABEL}={pool}"


def common_labels(pool: str, revision: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "workerfleet-worker",
        "app.kubernetes.io/instance": pool,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        POOL_LABEL: pool,
    }
    if revision is not None:
        labels[REVISION_LABEL] = revision
    return labels


@dataclass(frozen=True)
class ChildNames:
    """Child names, derived from the pool's name so they never collide between pools."""

    deployment: str
    canary: str
    service_account: str
    role: str
    policies: str
    budget: str
    autoscaler: str

    def all(self) -> set[str]:
        return {
            self.deployment,
            self.canary,
            self.service_account,
            self.role,
            self.policies,
            self.budget,
            self.autoscaler,
        }


def names(pool: str) -> ChildNames:
    return ChildNames(
        deployment=pool,
        canary=f"{pool}-canary",
        service_account=f"{pool}-worker",
        role=f"{pool}-worker",
        policies=f"{pool}-policies",
        budget=pool,
        autoscaler=pool,
    )


def grace_period_seconds(job_types: Iterable[JobTypeSpec]) -> int:
    """Long enough for the slowest attempt to finish after SIGTERM, plus time to drain."""
    return max((job_type.timeout_seconds for job_type in job_types), default=0) + DRAIN_MARGIN_SECONDS


def role_rules(job_types: Iterable[JobTypeSpec]) -> list[Manifest]:
    """The union of the JobTypes' permissions, one rule per distinct grant, in a stable order."""
    return rules_of(permission for job_type in job_types for permission in job_type.permissions)


def rules_of(permissions: Iterable[Permission]) -> list[Manifest]:
    """One Role rule per distinct permission, in a stable order."""
    rules: dict[str, Manifest] = {}
    for permission in permissions:
        rule = _rule(permission)
        rules[json.dumps(rule, sort_keys=True)] = rule
    return [rules[key] for key in sorted(rules)]


def _rule(permission: Permission) -> Manifest:
    rule: Manifest = {
        "apiGroups": sorted(permission.api_groups),
        "resources": sorted(permission.resources),
        "verbs": sorted(str(verb) for verb in permission.verbs),
    }
    if permission.resource_names:
        rule["resourceNames"] = sorted(permission.resource_names)
    return rule


def pool_lane(job_types: Iterable[JobTypeSpec]) -> Lane:
    """The heaviest lane of the pool's JobTypes: its workers must fit the largest job they take."""
    found = [job_type.lane for job_type in job_types]
    return max(found, key=LANE_ORDER.index) if found else DEFAULT_LANE


def _default_resources(container: dict[str, Any], lane: Lane) -> None:
    """The lane's resources for a container that sets none; one that sets any keeps exactly those."""
    resources = _object(container.get("resources")) or {}
    if not any(resources.get(key) for key in ("requests", "limits", "claims")):
        container["resources"] = copy.deepcopy(LANE_RESOURCES[lane])


def owner_reference(pool: PoolRef) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkerPool",
        "name": pool.name,
        "uid": pool.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(pool: PoolRef, name: str, revision: str | None = None) -> Manifest:
    return {
        "name": name,
        "namespace": pool.namespace,
        "labels": common_labels(pool.name, revision),
        "ownerReferences": [owner_reference(pool)],
    }


RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}
RESTRICTED_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": NON_ROOT_ID,
    "runAsGroup": NON_ROOT_ID,
    "fsGroup": NON_ROOT_ID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
_OPERATOR_OWNED = ("nodeName", "serviceAccountName", "serviceAccount", "automountServiceAccountToken")
"""Pod fields a template may not set at all: the scheduler places the pod, the operator picks its identity."""
_EMPTY_DIRECTORY: Manifest = {"emptyDir": {}}


def _object(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _confine(context: dict[str, Any]) -> None:
    """Drop the settings of a pod's or a container's security context that the API models refuse."""
    if context.get("runAsUser") == 0:
        del context["runAsUser"]
    if context.get("runAsNonRoot") is False:
        del context["runAsNonRoot"]
    for profile in ("seccompProfile", "appArmorProfile"):
        settings = _object(context.get(profile))
        if settings is not None and settings.get("type") not in CONFINED_PROFILE_TYPES:
            del context[profile]  # the pod-level RuntimeDefault applies instead
    selinux = _object(context.get("seLinuxOptions"))
    if selinux is not None:
        selinux.pop("user", None)
        selinux.pop("role", None)
        if selinux.get("type") not in (None, "", *ALLOWED_SELINUX_TYPES):
            del selinux["type"]
    windows = _object(context.get("windowsOptions"))
    if windows is not None and windows.get("hostProcess"):
        del windows["hostProcess"]
    if context.get("privileged"):
        del context["privileged"]
    if context.get("allowPrivilegeEscalation"):
        del context["allowPrivilegeEscalation"]
    if context.get("procMount", "Default") != "Default":
        del context["procMount"]
    capabilities = _object(context.get("capabilities"))
    if capabilities is not None and isinstance(capabilities.get("add"), list):
        capabilities["add"] = [name for name in capabilities["add"] if name in ADDABLE_CAPABILITIES]
    if isinstance(context.get("sysctls"), list):
        context["sysctls"] = [
            sysctl for sysctl in context["sysctls"] if _object(sysctl) and sysctl.get("name") in SAFE_SYSCTLS
        ]


def _confine_container(container: dict[str, Any]) -> None:
    context = _object(container.get("securityContext"))
    if context is not None:
        _confine(context)
    for port in container.get("ports") or []:
        if _object(port) is not None and port.get("hostPort"):
            del port["hostPort"]


def _restricted_volume(volume: dict[str, Any]) -> dict[str, Any]:
    if any(source in volume for source in FORBIDDEN_VOLUME_SOURCES):
        return {"name": volume.get("name"), **_EMPTY_DIRECTORY}  # mounts keep working, the node stays out
    projected = _object(volume.get("projected"))
    if projected is not None and isinstance(projected.get("sources"), list):
        projected["sources"] = [
            source
            for source in projected["sources"]
            if not (_object(source) is not None and "serviceAccountToken" in source)
        ]
    return volume


def restricted_template(template: Mapping[str, Any]) -> Manifest:
    """The pod template without anything the API models refuse (see api/podtemplate.py).

    A template the API server admits today comes back equal; one admitted before those rules existed
    loses what would reach past the pod: privilege, added capabilities, the node's namespaces, ports
    and filesystem (such a volume becomes an emptyDir, so mounts still resolve), a node name, a
    ServiceAccount or token of its own, unconfined seccomp/AppArmor/SELinux, unsafe sysctls, and
    ephemeral containers.
    """
    result: Manifest = copy.deepcopy(dict(template))
    metadata = _object(result.get("metadata"))
    annotations = _object(metadata.get("annotations")) if metadata is not None else None
    if metadata is not None and annotations is not None:
        metadata["annotations"] = {
            key: value
            for key, value in annotations.items()
            if not (key.startswith(APPARMOR_ANNOTATION_PREFIX) and value == UNCONFINED_APPARMOR_ANNOTATION)
        }
    spec = _object(result.get("spec"))
    if spec is None:
        return result
    for name in _HOST_NAMESPACES:
        if spec.get(name):
            del spec[name]
    for name in _OPERATOR_OWNED:
        spec.pop(name, None)
    if spec.get("ephemeralContainers"):
        del spec["ephemeralContainers"]
    context = _object(spec.get("securityContext"))
    if context is not None:
        _confine(context)
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if _object(container) is not None:
            _confine_container(container)
    if isinstance(spec.get("volumes"), list):
        spec["volumes"] = [
            _restricted_volume(volume) if _object(volume) is not None else volume
            for volume in spec["volumes"]
        ]
    return result


def restricted_spec(spec: Mapping[str, Any]) -> Manifest:
    """A stored WorkerPool spec with its template restricted, so a pool admitted before the template
    rules existed still parses, and runs without what they refuse."""
    result = dict(spec)
    template = _object(result.get("template"))
    if template is not None:
        result["template"] = restricted_template(template)
    return result


def _with_defaults(settings: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> Manifest:
    """The user's settings win; what they leave out gets the restricted default."""
    merged = copy.deepcopy(dict(defaults))
    merged.update(copy.deepcopy(dict(settings or {})))
    return merged


def _container_security(settings: Mapping[str, Any] | None) -> Manifest:
    context = _with_defaults(settings, RESTRICTED_CONTAINER_SECURITY)
    capabilities = dict(context.get("capabilities") or {})
    capabilities["drop"] = ["ALL"]  # whatever else the user dropped is in ALL
    context["capabilities"] = capabilities
    return context


def hardened_pod_template(
    template: Mapping[str, Any],
    *,
    pool: PoolRef,
    revision: str,
    service_account: str,
    mount_token: bool,
    policies_config_map: str,
    grace_seconds: int,
    environment: list[Manifest],
    policies_checksum: str,
    worker: Worker,
    lane: Lane = DEFAULT_LANE,
    track: str = STABLE_TRACK,
) -> Manifest:
    """The user's pod template, made to pass the Pod Security Standards `restricted` profile
    whatever it says.

    First everything the API models refuse is taken out (`restricted_template`: the template may
    predate the rules, or come from a Deployment's annotation). Settings the user wrote within the
    profile are kept; missing ones get restricted defaults; capabilities drop ALL whatever else the
    template drops. The pod runs as the pool's ServiceAccount, with a token only when `mount_token`.
    The root filesystem is read-only, so /tmp is an emptyDir; the JobType policies are mounted for
    the worker runtime, and their checksum annotates the pod so that a change of them rolls the pods.
    With the workerfleet runtime, the first container gets its port and probes (`runtime_probes`).
    Containers without resources get defaults: the first one those of the pool's `lane`, the others
    the smallest (`LANE_RESOURCES`).
    """
    result = restricted_template(template)
    metadata = result.setdefault("metadata", {})
    metadata["annotations"] = {
        **metadata.get("annotations", {}),
        POLICIES_CHECKSUM_ANNOTATION: policies_checksum,
    }
    metadata["labels"] = {
        **metadata.get("labels", {}),
        **common_labels(pool.name, revision),
        **selector_labels(pool.name, track),
    }
    spec = result["spec"]
    spec["serviceAccountName"] = service_account
    spec["automountServiceAccountToken"] = mount_token
    spec["terminationGracePeriodSeconds"] = grace_seconds
    spec["securityContext"] = _with_defaults(spec.get("securityContext"), RESTRICTED_POD_SECURITY)
    volumes = [volume for volume in spec.get("volumes", []) if volume["name"] not in {"tmp", "policies"}]
    volumes += [
        {"name": "tmp", "emptyDir": {}},
        {"name": "policies", "configMap": {"name": policies_config_map}},
    ]
    spec["volumes"] = volumes
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        container["securityContext"] = _container_security(container.get("securityContext"))
        mounts = [
            mount
            for mount in container.get("volumeMounts", [])
            if mount["mountPath"] not in {TMP_DIRECTORY, POLICIES_DIRECTORY}
        ]
        mounts += [
            {"name": "tmp", "mountPath": TMP_DIRECTORY},
            {"name": "policies", "mountPath": POLICIES_DIRECTORY, "readOnly": True},
        ]
        container["volumeMounts"] = mounts
    for index, container in enumerate([*spec["containers"], *spec.get("initContainers", [])]):
        _default_resources(container, lane if index == 0 else SIDE_CONTAINER_LANE)
    for container in spec["containers"]:
        ours = {variable["name"] for variable in environment}
        container["env"] = [v for v in container.get("env", []) if v["name"] not in ours] + environment
    if worker.runtime == WorkerRuntime.WORKERFLEET:
        runtime_probes(spec["containers"][0], worker.port)
    return result


def runtime_probes(container: dict[str, Any], port: int) -> None:
    """The runtime's port, named `metrics`, and liveness and readiness probes against it.

    Ports that clash with it (by name or number) give way; probes the template sets are kept, since
    whoever wrote them knows the image."""
    ports = [
        entry
        for entry in container.get("ports", [])
        if entry.get("name") != METRICS_PORT_NAME and entry.get("containerPort") != port
    ]
    container["ports"] = [*ports, {"name": METRICS_PORT_NAME, "containerPort": port, "protocol": "TCP"}]
    container.setdefault(
        "livenessProbe", {"httpGet": {"path": HEALTHZ_PATH, "port": METRICS_PORT_NAME}, **LIVENESS_PROBE}
    )
    container.setdefault(
        "readinessProbe", {"httpGet": {"path": READYZ_PATH, "port": METRICS_PORT_NAME}, **READINESS_PROBE}
    )


def _secret_env(name: str, reference: SecretKeySelector | None) -> list[Manifest]:
    if reference is None:
        return []
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": reference.name, "key": reference.key}}}]


def worker_environment(pool: PoolRef, revision: str, spec: WorkerPoolSpec) -> list[Manifest]:
    """What the worker runtime reads: who it is, where its queue is, where the policies are.

    Queue credentials stay in their Secret: the pod reads them through secretKeyRef, so no value
    is ever copied into the Deployment, the ConfigMap or the pool's status. The queue's TLS CA bundle
    (`tls.caSecretRef`) reaches the pod the same way, as WORKERFLEET_QUEUE_CA; `tls.serverName`
    travels inside WORKERFLEET_QUEUE with the rest of the queue's settings. A RabbitMQ pool's
    idempotency store gets the same treatment, as WORKERFLEET_STORE_USERNAME, _PASSWORD and _CA.
    """
    environment: list[Manifest] = [
        {"name": WorkerEnv.POOL.value, "value": pool.name},
        {"name": WorkerEnv.REVISION.value, "value": revision},
        {"name": WorkerEnv.QUEUE.value, "value": json.dumps(spec.queue.to_dict(), sort_keys=True)},
        {"name": WorkerEnv.POLICIES.value, "value": POLICIES_PATH},
    ]
    if spec.worker.runtime == WorkerRuntime.WORKERFLEET:
        environment.append({"name": WorkerEnv.METRICS_PORT.value, "value": str(spec.worker.port)})
    kind, backend = kind_of(spec.queue)
    needs = kind.worker_needs(backend)
    for variable, reference in needs.environment() if needs is not None else ():
        environment += _secret_env(variable.value, reference)
    return environment


def policies_document(job_types: Mapping[str, JobTypeSpec]) -> str:
    """The JobType policies as the worker runtime reads them, byte-for-byte stable."""
    document = {"jobTypes": {name: job_types[name].to_dict() for name in sorted(job_types)}}
    return json.dumps(document, sort_keys=True, indent=2)


def policies_checksum(job_types: Mapping[str, JobTypeSpec]) -> str:
    """A hash of the policies document: it changes exactly when the ConfigMap's content does."""
    return hashlib.sha256(policies_document(job_types).encode()).hexdigest()[:16]


def autoscaler(pool: PoolRef, scaling: Autoscaling) -> Manifest:
    """An autoscaling/v2 HPA on the pool's scale subresource, scaling on the pool's queue depth."""
    spec: Manifest = {
        "scaleTargetRef": {"apiVersion": API_VERSION, "kind": "WorkerPool", "name": pool.name},
        # An HPA cannot hold zero replicas; the operator itself activates a pool from zero.
        "minReplicas": max(1, scaling.min_replicas),
        "maxReplicas": scaling.max_replicas,
        "metrics": [
            {
                "type": "External",
                "external": {
                    "metric": {
                        "name": QUEUE_DEPTH_METRIC,
                        "selector": {"matchLabels": {POOL_LABEL: pool.name, "namespace": pool.namespace}},
                    },
                    "target": {"type": "AverageValue", "averageValue": str(scaling.target_depth_per_replica)},
                },
            }
        ],
    }
    if scaling.behavior is not None:
        spec["behavior"] = scaling.behavior.to_dict()
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(pool, names(pool.name).autoscaler),
        "spec": spec,
    }


def worker_deployment(
    pool: PoolRef,
    spec: WorkerPoolSpec,
    job_types: Mapping[str, JobTypeSpec],
    *,
    template: Mapping[str, Any],
    replicas: int,
    track: str,
) -> Manifest:
    """One track's Deployment of workers running `template`."""
    child = names(pool.name)
    revision = revision_of(template)
    metadata = _metadata(pool, child.deployment if track == STABLE_TRACK else child.canary, revision)
    metadata["annotations"] = {POD_TEMPLATE_ANNOTATION: json.dumps(template, sort_keys=True)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(pool.name, track)},
            "template": hardened_pod_template(
                template,
                pool=pool,
                revision=revision,
                service_account=child.service_account,
                mount_token=bool(role_rules(job_types.values())),
                policies_config_map=child.policies,
                grace_seconds=grace_period_seconds(job_types.values()),
                environment=worker_environment(pool, revision, spec),
                policies_checksum=policies_checksum(job_types),
                worker=spec.worker,
                lane=pool_lane(job_types.values()),
                track=track,
            ),
        },
    }


def worker_role(pool: PoolRef, rules: list[Manifest]) -> Manifest:
    """The Role the pool's workers' ServiceAccount is bound to."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(pool, names(pool.name).role),
        "rules": rules,
    }


def role_keys(pool: str) -> list[ChildKey]:
    """The binding first: deleting it takes the rights away even if the Role's delete then fails."""
    role = names(pool).role
    return [
        ChildKey("rbac.authorization.k8s.io/v1", "RoleBinding", role),
        ChildKey("rbac.authorization.k8s.io/v1", "Role", role),
    ]


def keda_keys(pool: str) -> list[ChildKey]:
    """The KEDA objects a pool in KEDA mode has: its ScaledObject and TriggerAuthentication."""
    return [
        ChildKey(KEDA_API_VERSION, "ScaledObject", pool),
        ChildKey(KEDA_API_VERSION, "TriggerAuthentication", f"{pool}-queue"),
    ]


def plan_children(
    pool: PoolRef,
    spec: WorkerPoolSpec,
    job_types: Mapping[str, JobTypeSpec],
    workers: Workers | None = None,
    *,
    keda_refused: bool = False,
) -> ChildPlan:
    """Every child the pool should have, and those it must no longer have.

    Without `workers`, the spec's template runs on spec.replicas with no canary. `keda_refused`: KEDA
    may not be given the pool's queue address or Secrets, so a KEDA pool has no KEDA objects.
    """
    child = names(pool.name)
    if workers is None:
        workers = Workers(stable_template=spec.template.to_dict(), stable_replicas=spec.replicas)
    rules = role_rules(job_types.values())
    needs_api = bool(rules)
    apply: list[Manifest] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(pool, child.service_account),
            "automountServiceAccountToken": needs_api,
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(pool, child.policies),
            "data": {POLICIES_FILE: policies_document(job_types)},
        },
    ]
    delete: list[ChildKey] = []
    if needs_api:
        apply += [
            worker_role(pool, rules),
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": _metadata(pool, child.role),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": child.role},
                "subjects": [
                    {"kind": "ServiceAccount", "name": child.service_account, "namespace": pool.namespace}
                ],
            },
        ]
    else:
        delete += role_keys(pool.name)
    apply.append(
        worker_deployment(
            pool,
            spec,
            job_types,
            template=workers.stable_template,
            replicas=workers.stable_replicas,
            track=STABLE_TRACK,
        )
    )
    if workers.canary_template is not None:
        apply.append(
            worker_deployment(
                pool,
                spec,
                job_types,
                template=workers.canary_template,
                replicas=workers.canary_replicas,
                track=CANARY_TRACK,
            )
        )
    else:
        delete.append(ChildKey("apps/v1", "Deployment", child.canary))
    budget_key = ChildKey("policy/v1", "PodDisruptionBudget", child.budget)
    if spec.replicas > 1:
        apply.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _metadata(pool, child.budget),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {POOL_LABEL: pool.name}}},
            }
        )
    else:
        delete.append(budget_key)
    autoscaler_key = ChildKey("autoscaling/v2", "HorizontalPodAutoscaler", child.autoscaler)
    engine = spec.autoscaling.engine if spec.autoscaling is not None else None
    if spec.autoscaling is not None and engine == AutoscalingEngine.BUILTIN:
        apply.append(autoscaler(pool, spec.autoscaling))
    else:
        delete.append(autoscaler_key)
    keda: list[Manifest] = []
    if spec.autoscaling is not None and engine == AutoscalingEngine.KEDA and not keda_refused:
        owned = {"labels": common_labels(pool.name), "ownerReferences": [owner_reference(pool)]}
        keda = keda_objects(pool.name, pool.namespace, owned, spec.queue, spec.autoscaling)
        apply += keda
    kept = {(manifest["kind"], manifest["metadata"]["name"]) for manifest in keda}
    delete += [key for key in keda_keys(pool.name) if (key.kind, key.name) not in kept]
    return ChildPlan(apply=apply, delete=delete)
