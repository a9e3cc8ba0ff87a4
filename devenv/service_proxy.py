"""The real node's Services at their ClusterIPs, for the host's API server and for the node's pods.

The local cluster runs no kube-proxy, and its API server's aggregator dials an APIService's Service
at its ClusterIP (routing to endpoints is off: the suite's ExternalName Services need it off). So a
metrics API served from an operator pod on the real node needs its ClusterIP reachable from the host.
For every Service whose ready endpoints are pods of the real node, this process puts the ClusterIP on
the node namespace's loopback, routes that one address from the host over the node's veth, listens
on each Service port inside the namespace, and passes each connection to a ready endpoint read from
the EndpointSlices (every SYNC_SECONDS). An address and its route go when the Service or its last
ready endpoint goes, and all of them when this process stops (SIGTERM).

    python -m devenv.service_proxy NETNS_FILE VETH GATEWAY POD_SUBNET SERVER CA CERT KEY
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devenv import netns_forward

SYNC_SECONDS = 1.0
API_TIMEOUT_SECONDS = 5.0

Address = tuple[str, int]


@dataclass(frozen=True)
class Routes:
    """Each ClusterIP:port of the node's Services and the ready pod addresses behind it."""

    backends: Mapping[Address, tuple[Address, ...]]

    @property
    def cluster_ips(self) -> set[str]:
        return {address for address, _ in self.backends}


def routes(
    services: Sequence[Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
    pod_subnet: str,
    serving: Collection[Address] = (),
) -> Routes:
    """The ClusterIP:port -> pod endpoints table for Services whose ready endpoints are on the node
    (addresses in `pod_subnet`); Services with none there are left out (they are not this node's).
    A ClusterIP:port already `serving` stays, with no endpoint, while its Service exists: between an
    operator pod's deletion and its successor's readiness the aggregator still dials it, and without
    the host route its connections would leave for the host's default route."""
    subnet = ipaddress.ip_network(pod_subnet)
    ready: dict[tuple[str, str], list[tuple[str | None, str, int]]] = {}
    for endpoint_slice in slices:
        metadata = endpoint_slice["metadata"]
        service = (metadata.get("labels") or {}).get("kubernetes.io/service-name")
        if service is None:
            continue
        ports = [(port.get("name") or "", int(port["port"])) for port in endpoint_slice.get("ports") or []]
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for pod_ip in endpoint.get("addresses") or []:
                if ipaddress.ip_address(pod_ip) in subnet:
                    for name, port in ports:
                        ready.setdefault((metadata["namespace"], service), []).append((name, pod_ip, port))
    table: dict[Address, tuple[Address, ...]] = {}
    for service in services:
        spec = service["spec"]
        cluster_ip = spec.get("clusterIP")
        if spec.get("type", "ClusterIP") != "ClusterIP" or cluster_ip in (None, "", "None"):
            continue
        key = (service["metadata"]["namespace"], service["metadata"]["name"])
        for service_port in spec.get("ports") or []:
            name = service_port.get("name") or ""
            backends = tuple(
                sorted((ip, port) for port_name, ip, port in ready.get(key, []) if port_name == name)
            )
            address = (cluster_ip, int(service_port["port"]))
            if backends or address in serving:
                table[address] = backends
    return Routes(table)


class ApiReader:
    """Lists from the API server on the host's loopback with the admin's client certificate."""

    def __init__(self, server: str, ca: Path, cert: Path, key: Path) -> None:
        self.server = server
        self.context = ssl.create_default_context(cafile=str(ca))
        self.context.load_cert_chain(str(cert), str(key))

    def items(self, path: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(  # noqa: S310  (the API server on loopback)
            f"{self.server}{path}", context=self.context, timeout=API_TIMEOUT_SECONDS
        ) as response:
            body: dict[str, Any] = json.load(response)
        return list(body.get("items") or [])


class ServiceProxy:
    """Listeners, addresses and host routes following `routes` on each sync."""

    def __init__(self, namespace: Path, veth: str, gateway: str) -> None:
        self.namespace = namespace
        self.veth = veth
        self.gateway = gateway
        self.table: Mapping[Address, tuple[Address, ...]] = {}
        self.listeners: dict[Address, socket.socket] = {}
        self.addresses: set[str] = set()
        self.turn = 0

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], capture_output=True, text=True, check=True, timeout=30)

    def apply(self, wanted: Routes) -> None:
        self.table = wanted.backends
        for address in wanted.cluster_ips - self.addresses:
            self._ip("-n", self.namespace.name, "address", "replace", f"{address}/32", "dev", "lo")
            self._ip("route", "replace", f"{address}/32", "via", self.gateway, "dev", self.veth)
            self.addresses.add(address)
            print(f"routing {address} to the node over {self.veth}", flush=True)
        for key in set(wanted.backends) - set(self.listeners):
            try:
                listener = netns_forward.listen_in_namespace(self.namespace, key)
            except OSError as error:
                print(f"cannot listen on {key[0]}:{key[1]} yet ({error}); trying again", flush=True)
                continue
            self.listeners[key] = listener
            threading.Thread(target=self._accept, args=(listener, key), daemon=True).start()
            print(
                f"serving {key[0]}:{key[1]} from {', '.join(f'{h}:{p}' for h, p in wanted.backends[key])}",
                flush=True,
            )
        for key in set(self.listeners) - set(wanted.backends):
            _close(self.listeners.pop(key))
        for address in self.addresses - wanted.cluster_ips:
            self._forget(address)

    def _forget(self, address: str) -> None:
        for args in (
            ("route", "delete", f"{address}/32", "dev", self.veth),
            ("-n", self.namespace.name, "address", "delete", f"{address}/32", "dev", "lo"),
        ):
            with contextlib.suppress(subprocess.CalledProcessError):
                self._ip(*args)
        self.addresses.discard(address)
        print(f"no longer routing {address}", flush=True)

    def close(self) -> None:
        for listener in self.listeners.values():
            _close(listener)
        self.listeners.clear()
        for address in list(self.addresses):
            self._forget(address)

    def _accept(self, listener: socket.socket, key: Address) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, key), daemon=True).start()

    def _serve(self, client: socket.socket, key: Address) -> None:
        backends = self.table.get(key) or ()
        if not backends:
            client.close()
            return
        self.turn += 1
        backend = backends[self.turn % len(backends)]
        try:
            upstream = netns_forward.connect_in_namespace(self.namespace, backend)
        except OSError:
            client.close()
            return
        netns_forward.pipe(client, upstream)


def _close(listener: socket.socket) -> None:
    """Close a listener for good: shut down first, so the thread blocked in accept() lets go of it
    (a plain close leaves the port bound until that accept returns)."""
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("namespace", type=Path, help="the node's network namespace file, /run/netns/NAME")
    parser.add_argument("veth", help="the host's end of the veth into the namespace")
    parser.add_argument("gateway", help="the namespace's address on that veth")
    parser.add_argument("pod_subnet", help="the node's pod addresses, e.g. 10.88.0.0/16")
    parser.add_argument("server", help="the API server, https://127.0.0.1:PORT")
    parser.add_argument("ca", type=Path)
    parser.add_argument("cert", type=Path)
    parser.add_argument("key", type=Path)
    args = parser.parse_args(argv)
    reader = ApiReader(args.server, args.ca, args.cert, args.key)
    proxy = ServiceProxy(args.namespace, args.veth, args.gateway)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    print(f"proxying the real node's Services over {args.veth}", flush=True)
    try:
        while not stopping.is_set():
            try:
                services = reader.items("/api/v1/services")
                slices = reader.items("/apis/discovery.k8s.io/v1/endpointslices")
            except OSError as error:
                print(f"API server not read ({error}); keeping the last table", flush=True)
            else:
                proxy.apply(routes(services, slices, args.pod_subnet, serving=set(proxy.listeners)))
            stopping.wait(SYNC_SECONDS)
    finally:
        proxy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
