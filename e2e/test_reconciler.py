"""WorkerPools become Deployments, least-privilege ServiceAccounts and an HPA, with honest status."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import yaml

from devenv.chart import OPERATOR_USER
from devenv.cluster import REPOSITORY, Cluster
from devenv.servers import RedisServer
from devenv.waiting import eventually
from e2e import pools

EXAMPLES = REPOSITORY / "examples"


def _condition(pool: dict[str, Any] | None, condition_type: str) -> tuple[str, str] | None:
    for condition in ((pool or {}).get("status") or {}).get("conditions") or []:
        if condition["type"] == condition_type:
            return condition["status"], condition["reason"]
    return None


def _example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return document


def _ready_as_desired(cluster: Cluster, namespace: str, pool: str) -> bool:
    """Ready with as many ready workers as the pool currently asks for (autoscaling may change it)."""
    body = cluster.get(f"workerpool/{pool}", namespace=namespace)
    if body is None:
        return False
    return pools.ready(cluster, namespace, pool, body["spec"]["replicas"])


def test_every_example_pool_runs_ready_in_a_restricted_namespace(
    operator: Cluster, restricted_namespace: str
) -> None:
    # Given every example JobType and WorkerPool, applied as they are to a namespace enforcing `restricted`
    paths = sorted(EXAMPLES.glob("jobtype-*.yaml")) + sorted(EXAMPLES.glob("workerpool-*.yaml"))
    for path in paths:
        operator.kubectl("apply", "-n", restricted_namespace, "-f", str(path))
    pools = [_example(path.name)["metadata"]["name"] for path in paths if "workerpool" in path.name]

    # Then each pool's hardened pods pass admission, become Ready, and the pool reports it
    for name in pools:
        eventually(
            partial(_ready_as_desired, operator, restricted_namespace, name),
            what=f"WorkerPool {name} Ready",
            timeout=90,
        )
        deployment = operator.get(f"deployment/{name}", namespace=restricted_namespace)
        owner = deployment["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("WorkerPool", name)

    # And `kubectl get wp` shows them, with their ready and desired counts
    table = operator.kubectl("get", "wp", "-n", restricted_namespace).stdout
    assert table.splitlines()[0].split()[:4] == ["NAME", "READY", "REPLICAS", "AVAILABLE"]
    for name in pools:
        assert any(line.split()[0] == name for line in table.splitlines()[1:]), table


def _can_i(cluster: Cluster, namespace: str, service_account: str, *request: str) -> bool:
    user = f"--as=system:serviceaccount:{namespace}:{service_account}"
    result = cluster.kubectl("auth", "can-i", *request, user, check=False)
    return result.stdout.strip() == "yes"


def test_workers_get_exactly_the_permissions_their_job_types_declare(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    presets = {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "watch"],
        "resourceNames": ["presets"],
    }
    # Given a pool serving one JobType that may read one ConfigMap, and one JobType with no permissions
    operator.apply(
        pools.job_type("resize", [presets]),
        pools.job_type("notify"),
        pools.pool("thumbs", ["resize", "notify"]),
        namespace=ns,
    )
    eventually(lambda: pools.ready(operator, ns, "thumbs", 1), what="thumbs Ready", timeout=90)

    # Then its ServiceAccount may do exactly that, and nothing next to it
    allowed = [("get", "configmaps/presets", "-n", ns), ("watch", "configmaps/presets", "-n", ns)]
    denied = [
        ("list", "configmaps", "-n", ns),
        ("get", "configmaps/other", "-n", ns),
        ("update", "configmaps/presets", "-n", ns),
        ("get", "secrets", "-n", ns),
        ("get", "configmaps/presets", "-n", "default"),
        ("list", "pods", "-n", ns),
    ]
    for request in allowed:
        assert _can_i(operator, ns, "thumbs-worker", *request), request
    for request in denied:
        assert not _can_i(operator, ns, "thumbs-worker", *request), request

    # When the JobType's permissions change
    pods = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
    operator.apply(pools.job_type("resize", [presets, pods]), namespace=ns)

    # Then the Role follows
    eventually(
        lambda: _can_i(operator, ns, "thumbs-worker", "list", "pods", "-n", ns),
        what="Role to allow list pods",
    )
    assert not _can_i(operator, ns, "thumbs-worker", "delete", "pods", "-n", ns)


REVOKED_WITHIN = 10.0
"""From a JobType's deletion to its permission gone from the workers' ServiceAccount (about 1 s here)."""


def _revoked_after(cluster: Cluster, namespace: str, request: tuple[str, ...], since: float) -> float:
    """Seconds from `since` until the pool's workers may no longer make `request`; fails past the bound."""
    eventually(
        lambda: not _can_i(cluster, namespace, "thumbs-worker", *request, "-n", namespace),
        what=f"{' '.join(request)} revoked from thumbs-worker",
        timeout=REVOKED_WITHIN,
        interval=0.1,
    )
    return time.monotonic() - since


def test_a_deleted_job_types_permissions_are_revoked_within_seconds(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    configmaps = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
    pods = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
    # Given a Ready pool whose JobTypes let its workers get ConfigMaps and list pods
    operator.apply(
        pools.job_type("resize", [configmaps]),
        pools.job_type("notify", [pods]),
        pools.pool("thumbs", ["resize", "notify"]),
        namespace=ns,
    )
    eventually(lambda: pools.ready(operator, ns, "thumbs", 1), what="thumbs Ready", timeout=90)
    assert _can_i(operator, ns, "thumbs-worker", "get", "configmaps", "-n", ns)
    workers = operator.get("deployment/thumbs", namespace=ns)["metadata"]["uid"]

    # When the JobType that grants ConfigMaps is deleted
    deleted = time.monotonic()
    operator.kubectl("delete", "jobtype", "resize", "-n", ns)

    # Then the workers may no longer get ConfigMaps within seconds, and may still list pods
    seconds = _revoked_after(operator, ns, ("get", "configmaps"), deleted)
    print(f"get configmaps revoked {seconds:.1f} s after the JobType was deleted")
    assert _can_i(operator, ns, "thumbs-worker", "list", "pods", "-n", ns)
    assert operator.get("role/thumbs-worker", namespace=ns)["rules"] == [pods]

    # And the pool says why, while its workers keep running (the same Deployment, one replica)
    eventually(
        lambda: (
            _condition(operator.get("workerpool/thumbs", namespace=ns), "Ready")
            == ("False", "JobTypeNotFound")
        ),
        what="Ready=False JobTypeNotFound",
    )
    deployment = operator.get("deployment/thumbs", namespace=ns)
    assert (deployment["metadata"]["uid"], deployment["spec"]["replicas"]) == (workers, 1)

    # When the other JobType goes too, Then nothing is left granted: the Role and its binding are gone
    deleted = time.monotonic()
    operator.kubectl("delete", "jobtype", "notify", "-n", ns)
    seconds = _revoked_after(operator, ns, ("list", "pods"), deleted)
    print(f"list pods revoked {seconds:.1f} s after the last JobType was deleted")
    assert operator.get("role/thumbs-worker", namespace=ns) is None


def test_a_pool_without_permissions_has_no_token(operator: Cluster, restricted_namespace: str) -> None:
    ns = restricted_namespace
    # Given a pool whose only JobType declares no permissions
    operator.apply(pools.job_type("notify"), pools.pool("mailer", ["notify"]), namespace=ns)
    eventually(lambda: pools.ready(operator, ns, "mailer", 1), what="mailer Ready", timeout=90)

    # Then no API token is mounted into its pods, and it has no Role
    [pod] = operator.get("pods", "-l", "workerfleet.dev/pool=mailer", namespace=ns)["items"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert not [volume for volume in pod["spec"]["volumes"] if volume.get("projected")]
    assert operator.get("role/mailer-worker", namespace=ns) is None
    assert not _can_i(operator, ns, "mailer-worker", "get", "configmaps", "-n", ns)


def test_scale_subresource_drives_the_deployment_and_deletion_collects_every_child(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    reader = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
    operator.apply(
        pools.job_type("resize", [reader]), pools.pool("thumbs", ["resize"], replicas=1), namespace=ns
    )
    eventually(lambda: pools.ready(operator, ns, "thumbs", 1), what="thumbs Ready", timeout=90)
    assert operator.get("poddisruptionbudget/thumbs", namespace=ns) is None

    # When the pool is scaled through its scale subresource
    operator.kubectl("scale", "wp", "thumbs", "--replicas=3", "-n", ns)

    # Then the Deployment follows, the pool reports 3 ready, and a disruption budget appears
    eventually(lambda: pools.ready(operator, ns, "thumbs", 3), what="3 ready workers", timeout=90)
    assert operator.get("deployment/thumbs", namespace=ns)["spec"]["replicas"] == 3
    assert operator.get("poddisruptionbudget/thumbs", namespace=ns)["spec"]["maxUnavailable"] == 1
    scale = json.loads(
        operator.kubectl(
            "get", "--raw", f"/apis/workerfleet.dev/v1alpha1/namespaces/{ns}/workerpools/thumbs/scale"
        ).stdout
    )
    assert scale["status"] == {"replicas": 3, "selector": "workerfleet.dev/pool=thumbs"}

    # When the pool is deleted (nothing holds it: the operator puts no finalizer on pools)
    assert not operator.get("workerpool/thumbs", namespace=ns)["metadata"].get("finalizers")
    operator.kubectl("delete", "wp", "thumbs", "-n", ns, "--wait=false")

    # Then the garbage collector removes every child
    children = [
        "deployment",
        "serviceaccount/thumbs-worker",
        "role",
        "rolebinding",
        "configmap/thumbs-policies",
        "poddisruptionbudget",
        "pods",
    ]

    def gone() -> bool:
        for kind in children:
            found = (
                operator.get(kind, namespace=ns)
                if "/" in kind
                else operator.get(kind, "-l", "workerfleet.dev/pool=thumbs", namespace=ns)
            )
            if found is not None and found.get("items", [found]):
                return False
        return True

    eventually(gone, what="every child of the pool to be garbage-collected", timeout=60)


def _events(cluster: Cluster, namespace: str, pool: str) -> list[tuple[str, str, str]]:
    events = cluster.get("events", "--field-selector", f"involvedObject.name={pool}", namespace=namespace)[
        "items"
    ]
    return [(event["type"], event["reason"], event["message"]) for event in events]


def test_missing_job_type_is_reported_and_recovers_by_itself(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    # Given a pool naming a JobType that does not exist
    operator.apply(pools.pool("orphan", ["not-yet"]), namespace=ns)

    # Then it is not Ready, says why, and a Warning Event names the JobType
    eventually(
        lambda: (
            _condition(operator.get("workerpool/orphan", namespace=ns), "Ready")
            == ("False", "JobTypeNotFound")
        ),
        what="Ready=False JobTypeNotFound",
    )
    warnings = eventually(
        lambda: [e for e in _events(operator, ns, "orphan") if e[:2] == ("Warning", "JobTypeNotFound")],
        what="a JobTypeNotFound Warning Event",
    )
    assert "not-yet" in warnings[0][2]

    # When the JobType is created
    operator.apply(pools.job_type("not-yet"), namespace=ns)

    # Then the pool recovers without anyone touching it
    eventually(
        lambda: pools.ready(operator, ns, "orphan", 1),
        what="orphan Ready after its JobType appears",
        timeout=90,
    )


def _operator_writes(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return cluster.audit_writes(user=OPERATOR_USER, namespace=namespace)


def _autoscaled_pool(name: str, job_types: list[str], address: str) -> dict[str, Any]:
    pool = pools.pool(name, job_types)
    pool["spec"]["queue"] = {"redis": {"address": address, "list": f"jobs:{name}"}}
    pool["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 2,
        "targetDepthPerReplica": 20,
        "pollingIntervalSeconds": 1,
    }
    return pool


def test_steady_state_costs_no_writes(
    operator: Cluster, restricted_namespace: str, redis_server: RedisServer
) -> None:
    ns = restricted_namespace
    # Given 20 pools, 5 of them autoscaled on a queue that stays empty, all reconciled and Ready
    operator.apply(
        pools.job_type("idle"),
        *(pools.pool(f"idle-{index}", ["idle"]) for index in range(15)),
        *(_autoscaled_pool(f"idle-{index}", ["idle"], redis_server.address) for index in range(15, 20)),
        namespace=ns,
    )
    for index in range(20):
        eventually(
            partial(pools.ready, operator, ns, f"idle-{index}", 1),
            what=f"idle-{index} Ready",
            timeout=120,
        )
    assert _operator_writes(operator, ns), "the operator's writes are not in the audit log"

    # When nothing changes for 60 seconds (after the last status writes have settled)
    time.sleep(5)
    before = len(_operator_writes(operator, ns))
    time.sleep(60)

    # Then the operator wrote nothing at all
    late = _operator_writes(operator, ns)[before:]
    assert late == [], [(w["verb"], w["objectRef"]) for w in late]


def test_a_reconcile_of_an_unchanged_pool_sends_no_write(
    operator: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    operator.apply(pools.job_type("resize"), pools.pool("thumbs", ["resize"]), namespace=ns)
    eventually(lambda: pools.ready(operator, ns, "thumbs", 1), what="thumbs Ready", timeout=90)
    time.sleep(3)
    before = len(_operator_writes(operator, ns))

    # When the pool changes in a way that asks for no new children (a label), which triggers a reconcile
    operator.kubectl("label", "wp", "thumbs", "touched=yes", "-n", ns)
    time.sleep(5)

    # Then the operator read, but wrote nothing
    late = _operator_writes(operator, ns)[before:]
    assert late == [], [(w["verb"], w["objectRef"]) for w in late]


def test_a_keda_pool_gets_a_scaled_object_checked_by_kedas_schema(operator: Cluster, namespace: str) -> None:
    # Given the RabbitMQ example pool, which leaves scaling to KEDA
    operator.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "jobtype-heavy-transcode-video.yaml"))
    operator.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "workerpool-rabbitmq.yaml"))

    # Then the operator writes a ScaledObject that KEDA's own CRD schema accepted, targeting the pool
    scaled = eventually(
        lambda: operator.get("scaledobject.keda.sh/transcoders", namespace=namespace),
        what="the ScaledObject",
        timeout=60,
    )
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "name": "transcoders",
    }
    [trigger] = scaled["spec"]["triggers"]
    assert (trigger["type"], trigger["metadata"]["queueName"]) == ("rabbitmq", "transcode-video")
    assert scaled["metadata"]["ownerReferences"][0]["name"] == "transcoders"

    # And the credentials stay in their Secret, referenced by a TriggerAuthentication
    authentication = operator.get(
        f"triggerauthentication.keda.sh/{trigger['authenticationRef']['name']}", namespace=namespace
    )
    assert {ref["parameter"]: ref["name"] for ref in authentication["spec"]["secretTargetRef"]} == {
        "username": "rabbitmq-credentials",
        "password": "rabbitmq-credentials",
    }

    # And no HPA of the operator's own competes with KEDA's
    assert operator.get("horizontalpodautoscaler/transcoders", namespace=namespace) is None
