"""The real node's configuration: what keeps it off the host's network and kwok's pods off it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from devenv import node, pki
from devenv.netns_forward import parse_rule

LAYOUT = node.NodeLayout(Path("/state"))


def test_forwarding_goes_to_loopback_only_and_a_bad_rule_says_how_to_write_one() -> None:
    assert parse_rule("10.96.0.1:443=127.0.0.1:6443") == (("10.96.0.1", 443), ("127.0.0.1", 6443))
    with pytest.raises(ValueError, match="loopback only"):
        parse_rule("10.96.0.1:443=192.0.2.1:6443")
    with pytest.raises(ValueError, match=r"LISTEN_HOST:PORT=127\.0\.0\.1:PORT"):
        parse_rule("10.96.0.1:443")


def test_the_kubelet_registers_the_node_tainted_and_runs_on_cgroup_v1() -> None:
    config = node.kubelet_config(LAYOUT, Path("/state/pki/ca.crt"))

    assert config["registerWithTaints"] == [{"key": node.TAINT_KEY, "value": "true", "effect": "NoSchedule"}]
    assert config["failCgroupV1"] is False
    assert config["readOnlyPort"] == 0
    assert config["address"] == node.NODE_IP
    assert config["authentication"]["anonymous"] == {"enabled": False}  # type: ignore[index]


def test_the_kubelet_reaches_the_api_server_at_the_kubernetes_service_address() -> None:
    pair = pki.Pair(Path("n.crt"), Path("n.key"))
    config = node._kubeconfig(Path("ca.crt"), pair)

    clusters = config["clusters"]
    assert isinstance(clusters, list)
    assert clusters[0]["cluster"]["server"] == f"https://{pki.KUBERNETES_SERVICE_IP}:443"


def test_containerd_keeps_its_state_in_the_cluster_directory_and_clamps_oom_score_adj() -> None:
    config = tomllib.loads(node.containerd_config(LAYOUT))

    assert config["root"].startswith("/state/node/")
    assert config["grpc"]["address"] == str(LAYOUT.containerd_socket)
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    assert runtime["cni"]["conf_dir"] == "/state/node/cni"
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False


def test_pods_get_addresses_from_the_node_subnet_behind_a_bridge_without_masquerading() -> None:
    plugins = node.cni_config(LAYOUT)["plugins"]
    assert isinstance(plugins, list)
    [bridge] = plugins

    assert bridge["type"] == "bridge"
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": node.own_network().pod_subnet}]]
    assert bridge["ipam"]["dataDir"] == "/state/node/cni-ipam"
