"""The local control plane is a real cluster: scheduling, garbage collection, RBAC and PodSecurity."""

from __future__ import annotations

import json

from devenv.cluster import FAKE_NODES, Cluster
from devenv.waiting import eventually


def _deployment(name: str, replicas: int) -> str:
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "smoke:1"}]},
            },
        },
    }
    return json.dumps(manifest)


def test_deployment_pods_become_ready_and_replicaset_is_garbage_collected(
    cluster: Cluster, namespace: str
) -> None:
    # Given a Deployment of three replicas applied with kubectl
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=_deployment("smoke", 3))

    # Then the controller-manager creates a ReplicaSet, the scheduler places its Pods on kwok nodes,
    # and kwok reports them Running and Ready
    eventually(
        lambda: cluster.get("deployment/smoke", namespace=namespace)["status"].get("readyReplicas") == 3,
        what="3 ready replicas",
    )
    pods = cluster.get("pods", "-l", "app=smoke", namespace=namespace)["items"]
    assert len(pods) == 3
    for pod in pods:
        assert pod["spec"]["nodeName"] in FAKE_NODES
        assert pod["status"]["phase"] == "Running"
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"
    replica_sets = cluster.get("replicasets", "-l", "app=smoke", namespace=namespace)["items"]
    assert [owner["kind"] for owner in replica_sets[0]["metadata"]["ownerReferences"]] == ["Deployment"]

    # When the Deployment is deleted
    cluster.kubectl("delete", "deployment/smoke", "-n", namespace, "--wait=false")

    # Then the garbage collector removes its ReplicaSet and Pods
    eventually(
        lambda: not cluster.get("replicasets", "-l", "app=smoke", namespace=namespace)["items"] or None,
        what="the ReplicaSet to be garbage-collected",
    )
    eventually(
        lambda: not cluster.get("pods", "-l", "app=smoke", namespace=namespace)["items"] or None,
        what="the Pods to be garbage-collected",
    )


def _can_i(cluster: Cluster, namespace: str, user: str) -> str:
    result = cluster.kubectl(
        "auth", "can-i", "list", "configmaps", "-n", namespace, f"--as={user}", check=False
    )
    return result.stdout.strip()


def test_rbac_denies_a_service_account_until_a_role_binding_allows_it(
    cluster: Cluster, namespace: str
) -> None:
    # Given a ServiceAccount with no RoleBinding
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    user = f"system:serviceaccount:{namespace}:reader"

    # Then RBAC denies it
    assert _can_i(cluster, namespace, user) == "no"

    # When a Role and RoleBinding grant it list on configmaps
    cluster.kubectl("create", "role", "reader", "--verb=list", "--resource=configmaps", "-n", namespace)
    cluster.kubectl(
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )

    # Then it is allowed, and still denied for what the Role does not grant
    eventually(lambda: _can_i(cluster, namespace, user) == "yes", what="RBAC to allow the ServiceAccount")
    denied = cluster.kubectl(
        "auth", "can-i", "delete", "configmaps", "-n", namespace, f"--as={user}", check=False
    )
    assert denied.stdout.strip() == "no"


def test_pod_security_restricted_rejects_a_privileged_pod(cluster: Cluster, namespace: str) -> None:
    # Given a namespace that enforces the restricted Pod Security Standard
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [{"name": "app", "image": "smoke:1", "securityContext": {"privileged": True}}]
        },
    }

    # When a privileged Pod is applied
    result = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input_text=json.dumps(privileged), check=False
    )

    # Then PodSecurity admission refuses it, and nothing was created
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr
    assert 'privileged (container "app" must not set securityContext.privileged=true)' in result.stderr
    assert cluster.get("pods", namespace=namespace)["items"] == []
