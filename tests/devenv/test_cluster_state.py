"""The local cluster's process bookkeeping, without starting a cluster."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from devenv import cluster, pki


def test_a_recorded_pid_of_another_program_is_not_ours(tmp_path: Path) -> None:
    # After a reboot a pid can belong to anything; only our binary at that pid counts as running.
    layout = cluster.Layout(tmp_path)
    layout.pids.mkdir()
    layout.pid("etcd").write_text(str(os.getpid()))
    assert cluster._running_pid(layout, "etcd") is None


def test_no_pid_file_means_not_running(tmp_path: Path) -> None:
    assert cluster._running_pid(cluster.Layout(tmp_path), "kube-apiserver") is None


def test_down_without_state_does_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "never-created"
    cluster.Cluster(missing).down()
    assert not missing.exists()


def test_down_removes_state_of_a_stopped_cluster(tmp_path: Path) -> None:
    layout = cluster.Layout(tmp_path / "state")
    layout.logs.mkdir(parents=True)
    layout.log("etcd").write_text("old log")
    cluster.Cluster(layout.root).down()
    assert not layout.root.exists()


def test_fake_nodes_carry_the_annotation_kwok_manages() -> None:
    components = cluster._components(cluster.Layout(Path("/state")), _names_only_pki())
    kwok_args = next(c.args for c in components if c.name == "kwok")
    assert "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake" in kwok_args
    node = cluster._fake_node("kwok-node-0")
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"


def test_every_component_listens_on_loopback_only() -> None:
    components = cluster._components(cluster.Layout(Path("/state")), _names_only_pki())
    for component in components:
        for arg in component.args:
            if "address=" in arg or "-urls=" in arg or "-ip=" in arg:
                assert "127.0.0.1" in arg, arg
    assert all(url.split("/")[2].startswith("127.0.0.1:") for url in cluster.HEALTH_URLS.values())


def _names_only_pki() -> pki.ClusterPki:
    pair = pki.Pair(Path("c.crt"), Path("c.key"))
    return pki.ClusterPki(
        pair, pair, pair, pair, pair, pair, pair, pair, pair, pair, Path("sa"), Path("sa.pub")
    )


def test_a_taken_port_is_detected_before_starting() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert cluster._is_listening(port)
    assert not cluster._is_listening(port)


def test_audit_writes_leave_out_requests_that_failed_authentication(tmp_path: Path) -> None:
    # Given an audit log with a write by a user and a 401 from a revoked token (no user at all)
    layout = cluster.Layout(tmp_path)
    layout.logs.mkdir()
    write = {"verb": "patch", "user": {"username": "alice"}, "objectRef": {"namespace": "a"}}
    rejected = {"verb": "patch", "user": {}, "objectRef": {"namespace": "a"}, "responseStatus": {"code": 401}}
    layout.audit_log.write_text("\n".join(json.dumps(event) for event in (write, rejected)) + "\n")

    # Then only the authenticated write is listed, with or without a user filter
    local = cluster.Cluster(tmp_path)
    assert local.audit_writes(namespace="a") == [write]
    assert local.audit_writes(user="alice") == [write]
