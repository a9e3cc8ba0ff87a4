"""An ordinary namespace user gains nothing through the operator that they could not do themselves.

The tenant is impersonated (`kubectl --as=tenant --as-group=team-a-developers`): bound to the built-in
`edit` ClusterRole in their namespace only, plus the right to create WorkerPools and JobTypes there.
The narrow author (`--as=author`) holds less: WorkerPool and JobType verbs, `use` on named JobTypes,
read on Deployments; no Secrets, no pods. After each attempt, `kubectl auth can-i --as=<the pool's
ServiceAccount>` or the generated Deployment, read as the admin, shows what was granted. A leaked
operator token (a TokenRequest for the chart's ServiceAccount) writes only what the operator writes.
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv import chart
from devenv.chart import RELEASE
from devenv.cluster import Cluster
from devenv.operator import SECOND_REPLICA_PORT_SHIFT, OperatorProcess
from devenv.toolchain import binaries
from devenv.waiting import eventually
from e2e import pools
from workerfleet.kube.client import MERGE_PATCH
from workerfleet.kube.options import ClusterOptions
from workerfleet.kube.rest import ApiError, Rest

TENANT = ("--as=tenant", "--as-group=team-a-developers")
AUTHOR = ("--as=author",)
JOB_TYPE_USER = f"{RELEASE}-jobtype-user"
QUEUE_CREDENTIALS_READER = f"{RELEASE}-queue-credentials"


def _tenant(cluster: Cluster, namespace: str, *documents: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """`kubectl apply` as the tenant; the result, refused or not."""
    text = "\n---\n".join(yaml.safe_dump(document) for document in documents)
    return cluster.kubectl(*TENANT, "apply", "-n", namespace, "-f", "-", input_text=text, check=False)


def _can(cluster: Cluster, namespace: str, pool: str, *request: str) -> bool:
    """Whether the pool's ServiceAccount may make `request`, as the API server authorizes it."""
    user = f"--as=system:serviceaccount:{namespace}:{pool}-worker"
    result = cluster.kubectl("auth", "can-i", user, "-n", namespace, *request, check=False)
    return result.stdout.strip() == "yes"


def _warnings(cluster: Cluster, namespace: str, pool: str) -> list[str]:
    listed = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={pool}", "-o", "json"
    )
    return [
        f"{event['reason']}: {event['message']}"
        for event in json.loads(listed.stdout)["items"]
        if event["type"] == "Warning"
    ]


def _bind(cluster: Cluster, namespace: str, name: str, cluster_role: str, *subject: str) -> None:
    cluster.kubectl("create", "rolebinding", name, "-n", namespace, f"--clusterrole={cluster_role}", *subject)


@pytest.fixture
def team(crds: Cluster, namespace: str) -> str:
    """The tenant's namespace: `edit` there, and create rights on WorkerPools and JobTypes."""
    _bind(crds, namespace, "tenant-edit", "edit", "--group=team-a-developers")
    crds.kubectl(
        "create", "role", "workerfleet-author", "-n", namespace,
        "--verb=get,list,watch,create,update,patch,delete", "--resource=workerpools,jobtypes",
    )  # fmt: skip
    crds.kubectl(
        "create", "rolebinding", "workerfleet-author", "-n", namespace,
        "--role=workerfleet-author", "--group=team-a-developers",
    )  # fmt: skip
    return namespace


def test_a_pool_may_reference_only_job_types_its_author_may_use(operator_chart: Cluster, team: str) -> None:
    cluster = operator_chart
    # Given a JobType in the tenant's namespace (the platform team's, say)
    assert _tenant(cluster, team, pools.job_type("platform-job", [])).returncode == 0

    # When the tenant creates a pool that references it, without the right to use it
    refused = _tenant(cluster, team, pools.pool("mine", ["platform-job"]))

    # Then admission refuses it, naming the JobType and the ClusterRole that grants its use
    assert refused.returncode != 0
    assert "platform-job" in refused.stderr
    assert JOB_TYPE_USER in refused.stderr
    assert cluster.kubectl("get", "workerpool", "mine", "-n", team, check=False).returncode != 0

    # When a namespace admin binds workerfleet-jobtype-user to the tenant
    _bind(cluster, team, "tenant-uses-job-types", JOB_TYPE_USER, "--user=tenant")

    # Then the same pool is admitted
    admitted = _tenant(cluster, team, pools.pool("mine", ["platform-job"]))
    assert admitted.returncode == 0, admitted.stderr


def test_a_job_type_grants_workers_nothing_beyond_the_delegable_set(operator: Cluster, team: str) -> None:
    cluster = operator
    _bind(cluster, team, "tenant-uses-job-types", JOB_TYPE_USER, "--user=tenant")
    # Given a JobType that asks for a queue-credential Secret the operator itself may read
    thief = pools.job_type(
        "thief",
        [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "verbs": ["get"],
                "resourceNames": ["redis-credentials"],
            }
        ],
    )
    assert _tenant(cluster, team, thief).returncode == 0

    # When the tenant's pool serves it
    assert _tenant(cluster, team, pools.pool("sneaky", ["thief"])).returncode == 0

    # Then the pool is not Ready, naming the refused rule, with a Warning Event saying so
    ready = eventually(
        lambda: (
            (c := cluster.condition("workerpool/sneaky", "Ready", namespace=team))
            and c["status"] == "False"
            and c
        ),
        what="the pool to be judged",
    )
    assert ready["reason"] == "PermissionNotDelegable", ready
    assert "JobType thief: get on secrets named redis-credentials" in ready["message"]
    eventually(
        lambda: any("PermissionNotDelegable" in event for event in _warnings(cluster, team, "sneaky")),
        what="a Warning Event on the pool",
    )
    # And its ServiceAccount may read no Secret (no Role was written)
    assert not _can(cluster, team, "sneaky", "get", "secret/redis-credentials")
    assert cluster.kubectl("get", "role", "sneaky-worker", "-n", team, check=False).returncode != 0


def test_queue_credentials_are_read_only_where_a_namespace_admin_granted_it(
    operator: Cluster, team: str
) -> None:
    cluster = operator
    _bind(cluster, team, "tenant-uses-job-types", JOB_TYPE_USER, "--user=tenant")
    # Given the tenant's Secret (not one the chart names) and a pool whose queue authenticates with it
    cluster.kubectl(
        "create", "secret", "generic", "team-redis", "-n", team, "--from-literal=password=hunter2"
    )
    assert _tenant(cluster, team, pools.job_type("plain", [])).returncode == 0
    queue = {
        "redis": {
            "address": "127.0.0.1:1",
            "list": "jobs",
            "auth": {"passwordSecretRef": {"name": "team-redis", "key": "password"}},
        }
    }
    autoscaling: dict[str, Any] = {
        "autoscaling": {
            "minReplicas": 0,
            "maxReplicas": 2,
            "targetDepthPerReplica": 5,
            "pollingIntervalSeconds": 1,
        }
    }

    # When the pool is created in a namespace that granted the operator nothing
    assert (
        _tenant(cluster, team, pools.pool("guarded", ["plain"], queue=queue, **autoscaling)).returncode == 0
    )

    # Then the queue is not reachable for want of the grant, and the condition names the fix
    reachable = eventually(
        lambda: (
            (c := cluster.condition("workerpool/guarded", "QueueReachable", namespace=team))
            and c["status"] == "False"
            and c
        ),
        what="the queue to be judged",
    )
    assert reachable["reason"] == "CredentialsNotGranted", reachable
    assert QUEUE_CREDENTIALS_READER in reachable["message"]
    eventually(
        lambda: any("CredentialsNotGranted" in event for event in _warnings(cluster, team, "guarded")),
        what="a Warning Event naming the grant",
    )

    # When the namespace's admin opts in by binding the chart's ClusterRole to the operator there
    _bind(
        cluster, team, "workerfleet-queue-credentials", QUEUE_CREDENTIALS_READER,
        f"--serviceaccount=workerfleet-system:{RELEASE}",
    )  # fmt: skip

    # Then the Secret is read and the queue itself is what is judged (nothing listens at :1)
    eventually(
        lambda: (
            (c := cluster.condition("workerpool/guarded", "QueueReachable", namespace=team))
            and c["reason"] == "QueueUnreachable"
        ),
        what="the credentials to be read and the queue tried",
    )


def test_system_namespaces_are_not_served_unless_watched(operator: Cluster, namespace: str) -> None:
    cluster = operator
    # Given the same JobType and pool in kube-system and in an ordinary namespace
    documents = (pools.job_type("system-job", []), pools.pool("system-pool", ["system-job"]))
    text = "\n---\n".join(yaml.safe_dump(document) for document in documents)
    try:
        for target in ("kube-system", namespace):
            cluster.kubectl("apply", "-n", target, "-f", "-", input_text=text)

        # When the operator has judged the ordinary one
        eventually(
            lambda: cluster.condition("workerpool/system-pool", "Ready", namespace=namespace),
            what="the pool judged",
        )

        # Then it left the one in kube-system alone: no status, no children
        assert cluster.condition("workerpool/system-pool", "Ready", namespace="kube-system") is None
        for kind in ("deployment", "serviceaccount/system-pool-worker"):
            name = [] if "/" in kind else ["system-pool"]
            assert cluster.kubectl("get", kind, *name, "-n", "kube-system", check=False).returncode != 0
    finally:
        cluster.kubectl("delete", "-n", "kube-system", "-f", "-", input_text=text, check=False)


def test_a_queue_off_the_allowlist_is_never_contacted(operator: Cluster, team: str) -> None:
    cluster = operator
    _bind(cluster, team, "tenant-uses-job-types", JOB_TYPE_USER, "--user=tenant")
    assert _tenant(cluster, team, pools.job_type("plain", [])).returncode == 0
    # Given a pool whose queue is somewhere the chart does not allow, with a password to send there
    queue = {
        "redis": {
            "address": "collector.example:6379",
            "list": "jobs",
            "auth": {"passwordSecretRef": {"name": "redis-credentials", "key": "password"}},
        }
    }
    autoscaling: dict[str, Any] = {
        "autoscaling": {
            "minReplicas": 0,
            "maxReplicas": 2,
            "targetDepthPerReplica": 5,
            "pollingIntervalSeconds": 1,
        }
    }

    # When the tenant creates it
    assert (
        _tenant(cluster, team, pools.pool("exfiltrate", ["plain"], queue=queue, **autoscaling)).returncode
        == 0
    )

    # Then the queue is refused before any Secret is read, naming the address and the chart value
    reachable = eventually(
        lambda: (
            (c := cluster.condition("workerpool/exfiltrate", "QueueReachable", namespace=team))
            and c["status"] == "False"
            and c
        ),
        what="the queue to be judged",
    )
    assert reachable["reason"] == "AddressNotAllowed", reachable
    assert "collector.example:6379" in reachable["message"]
    assert "allowedAddresses.queues" in reachable["message"]


KEDA_AUTOSCALING: dict[str, Any] = {
    "autoscaling": {"engine": "keda", "minReplicas": 0, "maxReplicas": 2, "targetDepthPerReplica": 5}
}


def _redis_queue(address: str, secret: str) -> dict[str, Any]:
    return {
        "redis": {
            "address": address,
            "list": "jobs",
            "auth": {"passwordSecretRef": {"name": secret, "key": "password"}},
        }
    }


def _keda_objects(cluster: Cluster, namespace: str, pool: str) -> list[str]:
    """The ScaledObject and TriggerAuthentication of a KEDA pool that exist."""
    return [
        kind
        for kind, name in (("scaledobject.keda.sh", pool), ("triggerauthentication.keda.sh", f"{pool}-queue"))
        if cluster.get(f"{kind}/{name}", namespace=namespace) is not None
    ]


def _refused(cluster: Cluster, namespace: str, pool: str, reason: str) -> dict[str, Any]:
    """The pool's QueueReachable condition once it says `reason`, with ScalingActive saying it too."""
    reachable: dict[str, Any] = eventually(
        lambda: (
            (c := cluster.condition(f"workerpool/{pool}", "QueueReachable", namespace=namespace))
            and c["reason"] == reason
            and c
        ),
        what=f"QueueReachable reason {reason}",
        timeout=20,
    )
    assert reachable["status"] == "False", reachable
    active = cluster.condition(f"workerpool/{pool}", "ScalingActive", namespace=namespace)
    assert active is not None, "no ScalingActive condition"
    assert (active["status"], active["reason"]) == ("False", reason), active
    eventually(
        lambda: any(event.startswith(f"{reason}: ") for event in _warnings(cluster, namespace, pool)),
        what=f"a Warning Event {reason}",
        timeout=10,
    )
    return reachable


def test_a_keda_pool_pointed_off_the_allowlist_hands_keda_nothing(operator: Cluster, team: str) -> None:
    cluster = operator
    _bind(cluster, team, "tenant-uses-job-types", JOB_TYPE_USER, "--user=tenant")
    assert _tenant(cluster, team, pools.job_type("plain", [])).returncode == 0
    # Given a KEDA pool on an allowed queue, with a Secret the chart lets the operator read
    allowed = pools.pool(
        "courier", ["plain"], queue=_redis_queue("127.0.0.1:6379", "redis-credentials"), **KEDA_AUTOSCALING
    )
    assert _tenant(cluster, team, allowed).returncode == 0
    eventually(
        lambda: len(_keda_objects(cluster, team, "courier")) == 2,
        what="the ScaledObject and TriggerAuthentication",
        timeout=20,
    )

    # When the tenant points it at a host of their choosing, keeping the password
    moved = pools.pool(
        "courier",
        ["plain"],
        queue=_redis_queue("collector.example:6379", "redis-credentials"),
        **KEDA_AUTOSCALING,
    )
    assert _tenant(cluster, team, moved).returncode == 0

    # Then KEDA is given neither the address nor the Secret: both objects are deleted
    eventually(
        lambda: _keda_objects(cluster, team, "courier") == [],
        what="the KEDA objects deleted (KEDA would send the password to collector.example)",
        timeout=20,
    )
    # And the pool says why, as with the built-in engine, with a Warning Event
    reachable = _refused(cluster, team, "courier", "AddressNotAllowed")
    assert "collector.example:6379" in reachable["message"], reachable
    assert "allowedAddresses.queues" in reachable["message"], reachable


def test_a_keda_pool_names_a_secret_only_where_the_namespace_opted_in(operator: Cluster, team: str) -> None:
    cluster = operator
    _bind(cluster, team, "tenant-uses-job-types", JOB_TYPE_USER, "--user=tenant")
    cluster.kubectl("create", "secret", "generic", "team-redis", "-n", team, "--from-literal=password=x")
    assert _tenant(cluster, team, pools.job_type("plain", [])).returncode == 0
    # Given a KEDA pool on an allowed address whose queue authenticates with the tenant's own Secret
    pool = pools.pool(
        "keyed", ["plain"], queue=_redis_queue("127.0.0.1:6379", "team-redis"), **KEDA_AUTOSCALING
    )

    # When the pool is created in a namespace that granted the operator nothing
    assert _tenant(cluster, team, pool).returncode == 0

    # Then the pool is reconciled, but KEDA is given no object naming the Secret
    eventually(
        lambda: cluster.condition("workerpool/keyed", "Ready", namespace=team),
        what="the pool reconciled",
        timeout=20,
    )
    assert _keda_objects(cluster, team, "keyed") == [], "KEDA was handed a Secret nobody opted in"
    # And the pool says so, naming the grant, with a Warning Event
    reachable = _refused(cluster, team, "keyed", "CredentialsNotGranted")
    assert QUEUE_CREDENTIALS_READER in reachable["message"], reachable
    assert "team-redis" in reachable["message"], reachable

    # When the namespace's admin opts in
    _bind(
        cluster, team, "workerfleet-queue-credentials", QUEUE_CREDENTIALS_READER,
        f"--serviceaccount=workerfleet-system:{RELEASE}",
    )  # fmt: skip

    # Then the objects are written and the refusal is gone (KEDA reports on its ScaledObject), at the
    # pool's next retry: the backoff doubles from 2 s, and the retries of all pools run one at a time,
    # so late in the full suite (many pools being deleted with their namespaces) the retry came 66 s
    # after the opt-in
    eventually(
        lambda: len(_keda_objects(cluster, team, "keyed")) == 2,
        what="the KEDA objects written after the opt-in",
        timeout=150,
    )
    eventually(
        lambda: cluster.condition("workerpool/keyed", "QueueReachable", namespace=team) is None,
        what="the refusal cleared",
        timeout=10,
    )


@pytest.fixture
def narrow_author(crds: Cluster, namespace: str) -> str:
    """A namespace where `author` may write WorkerPools and JobTypes, `use` JobType team-job only,
    and read Deployments: nothing else (no Secrets, no claims, no pods)."""
    rules = {
        "workerfleet-author": {
            "apiGroups": ["workerfleet.dev"],
            "resources": ["workerpools", "jobtypes"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        },
        "team-job-user": {
            "apiGroups": ["workerfleet.dev"],
            "resources": ["jobtypes"],
            "verbs": ["use"],
            "resourceNames": ["team-job"],
        },
        "deployment-reader": {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "verbs": ["get", "list", "watch"],
        },
    }
    for name, rule in rules.items():
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": [rule],
        }
        crds.apply(role, namespace=namespace)
        crds.kubectl("create", "rolebinding", name, "-n", namespace, f"--role={name}", "--user=author")
    return namespace


def _as_author(
    cluster: Cluster, namespace: str, document: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        *AUTHOR, "apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(document), check=False
    )


def _with_pod(document: dict[str, Any], **pod: Any) -> dict[str, Any]:
    """The pool with these fields added to its pod spec (and to its container, under `container`)."""
    changed = copy.deepcopy(document)
    spec = changed["spec"]["template"]["spec"]
    spec["containers"][0].update(pod.pop("container", {}))
    spec.update(pod)
    return changed


SECRET_ENV = {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-admin", "key": "password"}}}
ATTEMPTS: dict[str, tuple[dict[str, Any], str]] = {
    "envFrom secret": (
        {"container": {"envFrom": [{"secretRef": {"name": "db-admin"}}]}},
        "spec.template.spec.containers[].envFrom[].secretRef",
    ),
    "secret volume": (
        {"volumes": [{"name": "db", "secret": {"secretName": "db-admin"}}]},
        "spec.template.spec.volumes[].secret.secretName",
    ),
    "secretKeyRef": (
        {"container": {"env": [SECRET_ENV]}},
        "spec.template.spec.containers[].env[].valueFrom.secretKeyRef",
    ),
    "pvc": (
        {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "team-b-data"}}]},
        "spec.template.spec.volumes[].persistentVolumeClaim.claimName",
    ),
    "priority": ({"priorityClassName": "system-node-critical"}, "spec.template.spec.priorityClassName"),
    "control-plane toleration": (
        {
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}],
            "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
        },
        "spec.template.spec.tolerations",
    ),
}


def _pod_spec_of(cluster: Cluster, namespace: str, deployment: str) -> dict[str, Any]:
    """The pod spec of the Deployment the operator wrote, read as the admin."""
    found: dict[str, Any] = eventually(
        lambda: cluster.get(f"deployment/{deployment}", namespace=namespace), what=f"deployment {deployment}"
    )
    spec: dict[str, Any] = found["spec"]["template"]["spec"]
    return spec


def test_a_pool_author_gets_through_the_operator_nothing_they_do_not_hold(
    operator: Cluster, narrow_author: str
) -> None:
    cluster, namespace = operator, narrow_author
    cluster.kubectl(
        "create", "secret", "generic", "db-admin", "-n", namespace, "--from-literal=password=root"
    )
    cluster.apply(pools.job_type("team-job", []), pools.job_type("platform-job", []), namespace=namespace)
    # Given a pool of the platform team's JobType, made by the admin, and the author's own plain pool
    cluster.apply(pools.pool("platform", ["platform-job"]), namespace=namespace)
    mine = pools.pool("mine", ["team-job"])
    admitted = _as_author(cluster, namespace, mine)
    assert admitted.returncode == 0, admitted.stderr

    # When the author asks, in a new pool or in their own, for what they do not hold
    for attempt, (pod, field) in ATTEMPTS.items():
        for document in (pools.pool(f"new-{attempt.split()[0].lower()}", ["team-job"]), mine):
            refused = _as_author(cluster, namespace, _with_pod(document, **pod))
            # Then `kubectl apply` refuses it, naming the field
            assert refused.returncode != 0, f"{attempt}: admitted"
            assert field in refused.stderr, f"{attempt}: {refused.stderr}"
    # And changing the image of a pool that serves a JobType the author may not use is refused
    platform = pools.pool("platform", ["platform-job"])
    refused = _as_author(cluster, namespace, _with_pod(platform, container={"image": "mine:evil"}))
    assert refused.returncode != 0, "the image change was admitted"
    assert "spec.jobTypes" in refused.stderr, refused.stderr
    assert "platform-job" in refused.stderr, refused.stderr

    # And nothing was granted: the operator's Deployments run the pools as the admin made them
    for name in ("platform", "mine"):
        workers = _pod_spec_of(cluster, namespace, name)
        assert [c["image"] for c in workers["containers"]] == ["worker:1"]
        assert "db-admin" not in json.dumps(workers)
        assert "priorityClassName" not in workers
        assert "tolerations" not in workers
    assert cluster.get("deployment/new-envfrom", namespace=namespace) is None


def _leaked_token_kubectl(kubeconfig: Path, document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """`kubectl create` with the operator's leaked token: only the ServiceAccount's own rights."""
    return subprocess.run(
        [str(binaries()["kubectl"].path), f"--kubeconfig={kubeconfig}", "create", "-f", "-"],
        input=yaml.safe_dump(document),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _as_child(kind: str, api_version: str, name: str, namespace: str, **body: Any) -> dict[str, Any]:
    """An object dressed as a pool's child (label and owner), so only the rule under test refuses it."""
    owner = {
        "apiVersion": "workerfleet.dev/v1alpha1", "kind": "WorkerPool", "name": "any",
        "uid": str(uuid.uuid4()), "controller": True,
    }  # fmt: skip
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "workerfleet"},
        "ownerReferences": [owner],
    }
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **body}


def test_a_leaked_operator_token_writes_nothing_but_pool_children(
    operator_chart: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster = operator_chart
    # Given a token of the operator's ServiceAccount, leaked, and a ClusterRole within its own rights
    leaked = chart.service_account_kubeconfig(cluster, tmp_path / "leaked.kubeconfig")
    cluster.kubectl("create", "clusterrole", f"{namespace}-configmaps", "--verb=get", "--resource=configmaps")
    try:
        deployment = {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "miner"}},
            "template": {
                "metadata": {"labels": {"app": "miner"}},
                "spec": {"containers": [{"name": "miner", "image": "miner:1"}]},
            },
        }
        attempts = {
            "a Deployment in kube-system": (
                _as_child("Deployment", "apps/v1", f"{namespace}-miner", "kube-system", spec=deployment),
                "writes nothing in namespace kube-system",
            ),
            "a binding of a ClusterRole": (
                _as_child(
                    "RoleBinding",
                    "rbac.authorization.k8s.io/v1",
                    "escalate",
                    namespace,
                    roleRef={
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": f"{namespace}-configmaps",
                    },
                    subjects=[{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
                ),
                "may bind only a Role of the namespace",
            ),
            "a Role beyond the delegable set": (
                _as_child(
                    "Role",
                    "rbac.authorization.k8s.io/v1",
                    "beyond",
                    namespace,
                    rules=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete"]}],
                ),
                "within rbac.delegableWorkerPermissions",
            ),
            "an object no pool owns": (
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "foreign", "namespace": namespace},
                },
                "only the children of WorkerPools",
            ),
        }
        # When the token's holder writes them
        for attempt, (document, message) in attempts.items():
            refused = _leaked_token_kubectl(leaked, document)
            # Then admission refuses each, saying which bound it crossed (RBAC alone would allow them)
            assert refused.returncode != 0, f"{attempt}: admitted"
            assert message in refused.stderr, f"{attempt}: {refused.stderr}"
        assert cluster.get("deployment", f"{namespace}-miner", namespace="kube-system") is None
    finally:
        cluster.kubectl("delete", "clusterrole", f"{namespace}-configmaps", "--ignore-not-found")
        cluster.kubectl(
            "delete", "deployment", f"{namespace}-miner", "-n", "kube-system", "--ignore-not-found"
        )


def test_a_leaked_operator_token_may_change_only_a_workers_deletion_cost(
    operator_chart: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster = operator_chart
    # Given a worker's pod and a pod of someone else, and a leaked token of the operator's ServiceAccount
    leaked = chart.service_account_kubeconfig(cluster, tmp_path / "leaked.kubeconfig")
    for name, labels in (("worker", {"app.kubernetes.io/managed-by": "workerfleet"}), ("theirs", {})):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "app:1"}]},
        }
        cluster.apply(pod, namespace=namespace)

    # the operator's own client: kubectl would first read the pod, which its rights do not allow
    rest = Rest(ClusterOptions(kubeconfig=str(leaked)))
    cost = "controller.kubernetes.io/pod-deletion-cost"

    def patch(pod: str, metadata: dict[str, Any]) -> str | None:
        """The refusal's message; None when the merge patch was admitted."""
        try:
            rest.request(
                "PATCH",
                rest.path("v1", "Pod", namespace, pod),
                body={"metadata": metadata},
                content_type=MERGE_PATCH,
            )
        except ApiError as error:
            return error.message
        return None

    # When its holder sets the worker's deletion cost, the one write scale-in needs
    admitted = patch("worker", {"annotations": {cost: "7"}})
    # Then it is admitted
    assert admitted is None, admitted
    assert cluster.get("pod/worker", namespace=namespace)["metadata"]["annotations"][cost] == "7"
    # And every other change of a pod is refused by admission, though RBAC grants `patch` on pods
    attempts = {
        "another annotation": ("worker", {"annotations": {"evil": "1"}}, "only the controller.kubernetes.io"),
        "a label": ("worker", {"labels": {"app": "evil"}}, "only the controller.kubernetes.io"),
        "someone else's pod": ("theirs", {"annotations": {cost: "7"}}, "only annotate workers' pods"),
    }
    for attempt, (target, metadata, message) in attempts.items():
        refused = patch(target, metadata)
        assert refused is not None, f"{attempt}: admitted"
        assert message in refused, f"{attempt}: {refused}"
    assert "evil" not in (cluster.get("pod/worker", namespace=namespace)["metadata"].get("labels") or {})


def test_without_its_admission_policy_the_operator_serves_no_pool(operator: Cluster, tmp_path: Path) -> None:
    cluster = operator
    # Given an operator told to require a policy the cluster does not have, serving kube-public only
    # (the suite's operator leaves system namespaces alone), and a pool there
    required = ("--namespace=kube-public", "--admission-policy=workerfleet-absent")
    unguarded = OperatorProcess(
        cluster, tmp_path / "unguarded.log", extra_args=required, register=False,
        port_shift=SECOND_REPLICA_PORT_SHIFT,
    )  # fmt: skip
    pool = pools.pool("unguarded", ["any-job"])
    try:
        unguarded.start()
        cluster.apply(pool, namespace="kube-public")

        # Then the pool is not Ready, naming the missing policy, with a Warning Event
        ready = eventually(
            lambda: cluster.condition("workerpool/unguarded", "Ready", namespace="kube-public"),
            what="the pool judged",
        )
        assert ready["reason"] == "AdmissionPolicyMissing", ready
        assert "ValidatingAdmissionPolicy workerfleet-absent not found" in ready["message"]
        eventually(
            lambda: any(
                "AdmissionPolicyMissing" in e for e in _warnings(cluster, "kube-public", "unguarded")
            ),
            what="a Warning Event",
        )
        # And nothing was written for it
        assert cluster.get("deployment/unguarded", namespace="kube-public") is None
        assert cluster.get("serviceaccount/unguarded-worker", namespace="kube-public") is None
    finally:
        unguarded.stop()
        cluster.kubectl("delete", "workerpool", "unguarded", "-n", "kube-public", "--ignore-not-found")


def test_a_pool_author_may_name_every_secret_granted_to_them_by_name(
    operator: Cluster, narrow_author: str
) -> None:
    cluster, namespace = operator, narrow_author
    # Given an author granted get on six Secrets by name (not on the namespace's Secrets)
    granted = [f"team-secret-{index}" for index in range(6)]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "named-secrets"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": granted}],
    }
    cluster.apply(role, pools.job_type("team-job", []), namespace=namespace)
    cluster.kubectl(
        "create", "rolebinding", "named-secrets", "-n", namespace, "--role=named-secrets", "--user=author"
    )
    env = [
        {"name": f"S{index}", "valueFrom": {"secretKeyRef": {"name": name, "key": "k"}}}
        for index, name in enumerate([*granted[:4], granted[0]])
    ]
    queue = {
        "redis": {
            "address": "127.0.0.1:6379",
            "list": "jobs",
            "auth": {"passwordSecretRef": {"name": granted[5], "key": "password"}},
        }
    }
    pool = _with_pod(
        pools.pool("many-secrets", ["team-job"], queue=queue),
        container={"env": env},
        volumes=[{"name": "s", "secret": {"secretName": granted[4]}}],
    )

    # When the author creates a pool naming all six, across fields and more than once
    admitted = _as_author(cluster, namespace, pool)

    # Then it is admitted: each name is checked on its own, within admission's cost budget
    assert admitted.returncode == 0, admitted.stderr
    # And one more Secret, not granted, is refused by name
    refused = _as_author(
        cluster, namespace, _with_pod(pool, volumes=[{"name": "x", "secret": {"secretName": "other"}}])
    )
    assert refused.returncode != 0
    assert "Secret other in namespace" in refused.stderr, refused.stderr
