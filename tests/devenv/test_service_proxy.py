"""Which ClusterIPs the real node's Service proxy serves, and the veth each checkout's node gets."""

from __future__ import annotations

from typing import Any

from devenv import node
from devenv.service_proxy import routes


def _service(
    name: str, cluster_ip: str, port: int = 443, port_name: str = "https", **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ops", "name": name},
        "spec": {"clusterIP": cluster_ip, "ports": [{"name": port_name, "port": port}], **spec},
    }


def _slice(
    service: str, port: int, *endpoints: tuple[str, bool | None], port_name: str = "https"
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ops", "labels": {"kubernetes.io/service-name": service}},
        "ports": [{"name": port_name, "port": port}],
        "endpoints": [
            {"addresses": [address], "conditions": {} if ready is None else {"ready": ready}}
            for address, ready in endpoints
        ],
    }


def test_a_service_is_served_at_its_cluster_ip_by_its_ready_pods_on_the_node() -> None:
    services = [_service("metrics-api", "10.96.12.7")]
    slices = [_slice("metrics-api", 6443, ("10.88.0.9", True), ("10.88.0.8", None), ("10.88.0.5", False))]

    table = routes(services, slices, node.network(0).pod_subnet)

    assert table.backends == {("10.96.12.7", 443): (("10.88.0.8", 6443), ("10.88.0.9", 6443))}
    assert table.cluster_ips == {"10.96.12.7"}


def test_services_of_other_nodes_headless_or_external_ones_and_unnamed_ports_are_left_alone() -> None:
    services = [
        _service("on-kwok", "10.96.0.20"),
        _service("headless", "None"),
        _service("external", "", type="ExternalName"),
        _service("unready", "10.96.0.21"),
        _service("other-port", "10.96.0.22", port_name="metrics"),
    ]
    slices = [
        _slice("on-kwok", 6443, ("10.244.1.3", True)),
        _slice("headless", 6443, ("10.88.0.3", True)),
        _slice("external", 6443, ("10.88.0.4", True)),
        _slice("unready", 6443, ("10.88.0.6", False)),
        _slice("other-port", 6443, ("10.88.0.7", True)),
    ]

    assert routes(services, slices, node.network(0).pod_subnet).backends == {}


def test_a_served_cluster_ip_stays_while_its_service_exists_and_goes_with_it() -> None:
    services = [_service("metrics-api", "10.96.12.7")]
    between_pods = [_slice("metrics-api", 6443)]
    served = [("10.96.12.7", 443)]

    assert routes(services, between_pods, node.network(0).pod_subnet, served).backends == {
        ("10.96.12.7", 443): ()
    }
    assert routes(services, between_pods, node.network(0).pod_subnet).backends == {}
    assert routes([], between_pods, node.network(0).pod_subnet, served).backends == {}


def test_each_checkouts_node_has_pod_and_veth_addresses_of_its_own() -> None:
    networks = [node.network(offset) for offset in (0, 100, 200, 700)]

    assert [network.pod_subnet for network in networks] == [
        "10.88.0.0/20",
        "10.88.16.0/20",
        "10.88.32.0/20",
        "10.88.112.0/20",
    ]
    assert [network.host_name for network in networks] == ["wfn0", "wfn100", "wfn200", "wfn700"]
    assert [(network.host_address, network.node_address) for network in networks] == [
        ("10.251.0.1", "10.251.0.2"),
        ("10.251.0.5", "10.251.0.6"),
        ("10.251.0.9", "10.251.0.10"),
        ("10.251.0.29", "10.251.0.30"),
    ]
