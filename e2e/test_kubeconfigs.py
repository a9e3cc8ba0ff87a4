"""Every kubeconfig a user has works: a matrix against the real API server, each entry proven by a
request that succeeds as the expected user (SelfSubjectReview), and refused where it must be."""

from __future__ import annotations

import asyncio
import base64
import json
import select
import socket
import stat
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv import pki
from devenv.cluster import Cluster
from devenv.waiting import eventually
from workerfleet import __version__
from workerfleet.cli import kubectl_plugin
from workerfleet.handlers import startup
from workerfleet.kube import credentials
from workerfleet.kube.credentials import ConfigError, CredentialSource
from workerfleet.kube.options import ClusterOptions
from workerfleet.kube.rest import ApiError, Rest, TransportError

SELF_SUBJECT_REVIEW = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
CERTIFICATE_USER = "e2e-kubeconfig-user"
RENEWED_USER = "e2e-kubeconfig-renewed"


def _username(client: Rest) -> str:
    review = client.request(
        "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=SELF_SUBJECT_REVIEW
    )
    return str(review["status"]["userInfo"]["username"])


def whoami(options: ClusterOptions) -> str:
    """The user the API server sees for these options: proof the request went through as them."""
    return _username(Rest(options))


class ConnectProxy:
    """An HTTP CONNECT proxy on loopback that tunnels to loopback only and counts its tunnels."""

    def __init__(self) -> None:
        self.tunnels = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> ConnectProxy:
        self._accepting.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._accepting.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._tunnel, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            client.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 8192:
                chunk = client.recv(1024)
                if not chunk:
                    return
                request += chunk
            method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ", 2)
            host, _, port = target.rpartition(":")
            if method != "CONNECT" or host not in ("127.0.0.1", "localhost"):
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.tunnels += 1
                self._pump(client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        while not self._stopping.is_set():
            readable, _, _ = select.select([client, upstream], [], [], 0.2)
            for source in readable:
                data = source.recv(65536)
                if not data:
                    return
                (upstream if source is client else client).sendall(data)


@dataclass(frozen=True)
class Rig:
    cluster: Cluster
    namespace: str
    server: str
    ca_pem: str
    reader_token: str
    rotated_token: str
    certificate: pki.Pair
    directory: Path

    def kubeconfig(self, name: str, user: dict[str, Any], *, cluster: dict[str, Any] | None = None) -> Path:
        """A kubeconfig whose current context is `name` with this user, plus an `admin` context."""
        admin = yaml.safe_load(self.cluster.kubeconfig.read_text())
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": name,
                    "cluster": cluster
                    or {"server": self.server, "certificate-authority-data": _b64(self.ca_pem)},
                },
                *admin["clusters"],
            ],
            "users": [{"name": name, "user": user}, *admin["users"]],
            "contexts": [
                {"name": name, "context": {"cluster": name, "user": name, "namespace": self.namespace}},
                {"name": "admin", "context": admin["contexts"][0]["context"]},
            ],
            "current-context": name,
        }
        path = self.directory / f"{name}.kubeconfig"
        path.write_text(json.dumps(config))
        return path

    def service_account(self, name: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{name}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def rig(crds: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    cluster = crds
    namespace = f"e2e-kc-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    for account in ("reader", "rotated"):
        cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
    cluster.kubectl(
        "create",
        "rolebinding",
        "reader-view",
        "--clusterrole=view",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    admin = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]

    def token(account: str) -> str:
        return cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()

    try:
        yield Rig(
            cluster=cluster,
            namespace=namespace,
            server=admin["server"],
            ca_pem=base64.b64decode(admin["certificate-authority-data"]).decode(),
            reader_token=token("reader"),
            rotated_token=token("rotated"),
            certificate=pki.Authority(cluster.layout.pki, "ca").issue(CERTIFICATE_USER, CERTIFICATE_USER),
            directory=tmp_path_factory.mktemp("kubeconfigs"),
        )
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(autouse=True)
def _no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def _plugin(
    rig: Rig, name: str, status: dict[str, Any] | None, *, first: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An exec user whose plugin checks KUBERNETES_EXEC_INFO and prints `status` (None: fails), or
    `first` on its first run (a token the server no longer takes); it counts its runs in `<name>.runs`."""
    plugin = rig.directory / name

    def credential(answer: dict[str, Any] | None) -> str:
        return json.dumps(
            {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": answer}
        )

    runs = rig.directory / f"{name}.runs"
    plugin.write_text(
        f"#!{sys.executable}\nimport json, os, pathlib, sys\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['kind'] == 'ExecCredential', info\n"
        f"runs = pathlib.Path({str(runs)!r})\n"
        "count = int(runs.read_text()) + 1 if runs.exists() else 1\n"
        "runs.write_text(str(count))\n"
        + (f"if count == 1:\n    sys.stdout.write({credential(first)!r}); sys.exit(0)\n" if first else "")
        + (
            "sys.stderr.write('the identity provider said no'); sys.exit(1)\n"
            if status is None
            else f"sys.stdout.write({credential(status)!r})\n"
        )
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)}}


def test_a_second_context_is_chosen_with_context_also_by_kubectl_workerfleet(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = rig.kubeconfig("reader", {"token": rig.reader_token})

    assert whoami(ClusterOptions(kubeconfig=str(path))) == rig.service_account("reader")
    assert whoami(ClusterOptions(kubeconfig=str(path), context="admin")) == "workerfleet-admin"
    # The reader may not read WorkerPools; the admin context may, and finds none of that name.
    refused = kubectl_plugin.main(["--kubeconfig", str(path), "status", "absent"])
    assert refused == kubectl_plugin.EXIT_API_ERROR
    assert "forbidden" in capsys.readouterr().err.lower()
    found = kubectl_plugin.main(
        ["--kubeconfig", str(path), "--context", "admin", "-n", rig.namespace, "status", "absent"]
    )
    assert found == kubectl_plugin.EXIT_NOT_FOUND
    assert f"WorkerPool {rig.namespace}/absent not found" in capsys.readouterr().out


def test_token_beside_token_file_the_token_wins(rig: Rig) -> None:
    (rig.directory / "stale-token").write_text("not-a-valid-token")
    path = rig.kubeconfig("both", {"token": rig.reader_token, "tokenFile": "stale-token"})

    assert whoami(ClusterOptions(kubeconfig=str(path))) == rig.service_account("reader")


def test_exec_plugins_return_a_token_or_a_client_certificate_or_fail_clearly(rig: Rig) -> None:
    token = rig.kubeconfig("exec-token", _plugin(rig, "token-plugin", {"token": rig.reader_token}))
    certificate = rig.kubeconfig(
        "exec-cert",
        _plugin(
            rig,
            "cert-plugin",
            {
                "clientCertificateData": rig.certificate.cert.read_text(),
                "clientKeyData": rig.certificate.key.read_text(),
            },
        ),
    )
    failing = rig.kubeconfig("exec-fail", _plugin(rig, "failing-plugin", None))
    revoked = rig.kubeconfig(
        "exec-revoked",
        _plugin(rig, "revoked-plugin", {"token": rig.reader_token}, first={"token": "revoked"}),
    )

    assert whoami(ClusterOptions(kubeconfig=str(token))) == rig.service_account("reader")
    assert whoami(ClusterOptions(kubeconfig=str(certificate))) == CERTIFICATE_USER
    with pytest.raises(ConfigError, match=r"failing-plugin' failed.*the identity provider said no"):
        whoami(ClusterOptions(kubeconfig=str(failing)))
    assert whoami(ClusterOptions(kubeconfig=str(revoked))) == rig.service_account("reader")
    assert (rig.directory / "revoked-plugin.runs").read_text() == "2", "the 401 ran the plugin again"


def test_a_client_certificate_and_key_from_files(rig: Rig) -> None:
    path = rig.kubeconfig(
        "cert-files",
        {"client-certificate": str(rig.certificate.cert), "client-key": str(rig.certificate.key)},
    )

    assert whoami(ClusterOptions(kubeconfig=str(path))) == CERTIFICATE_USER


def test_a_client_certificate_renewed_on_disk_is_picked_up_by_a_running_client(rig: Rig) -> None:
    renewed = pki.Authority(rig.cluster.layout.pki, "ca").issue(RENEWED_USER, RENEWED_USER)
    certificate, key = rig.directory / "rotating.crt", rig.directory / "rotating.key"
    certificate.write_bytes(rig.certificate.cert.read_bytes())
    key.write_bytes(rig.certificate.key.read_bytes())
    path = rig.kubeconfig("rotating", {"client-certificate": str(certificate), "client-key": str(key)})
    now = [1.0]
    client = Rest(source=CredentialSource(ClusterOptions(kubeconfig=str(path)), clock=lambda: now[0]))

    assert _username(client) == CERTIFICATE_USER
    certificate.write_bytes(renewed.cert.read_bytes())
    key.write_bytes(renewed.key.read_bytes())
    now[0] += credentials.RESOLVE_AGAIN_SECONDS
    assert _username(client) == RENEWED_USER, "new connections with the renewed certificate"


def test_tls_server_name_is_the_name_the_serving_certificate_is_checked_for(rig: Rig) -> None:
    # The serving certificate names 127.0.0.1 and `kubernetes`, not `elsewhere.invalid`.
    def cluster(name: str) -> dict[str, Any]:
        return {"server": rig.server, "certificate-authority-data": _b64(rig.ca_pem), "tls-server-name": name}

    right = rig.kubeconfig("sni-right", {"token": rig.reader_token}, cluster=cluster("kubernetes"))
    wrong = rig.kubeconfig("sni-wrong", {"token": rig.reader_token}, cluster=cluster("elsewhere.invalid"))

    assert whoami(ClusterOptions(kubeconfig=str(right))) == rig.service_account("reader")
    with pytest.raises(TransportError, match=r"elsewhere\.invalid"):
        whoami(ClusterOptions(kubeconfig=str(wrong)))


def test_an_http_connect_proxy_from_proxy_url_and_from_https_proxy(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ConnectProxy() as proxy:
        cluster = {
            "server": rig.server,
            "certificate-authority-data": _b64(rig.ca_pem),
            "proxy-url": proxy.url,
        }
        configured = rig.kubeconfig("proxied", {"token": rig.reader_token}, cluster=cluster)
        plain = rig.kubeconfig("direct", {"token": rig.reader_token})

        assert whoami(ClusterOptions(kubeconfig=str(configured))) == rig.service_account("reader")
        assert proxy.tunnels == 1
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        assert whoami(ClusterOptions(kubeconfig=str(plain))) == rig.service_account("reader")
        assert proxy.tunnels == 2
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert whoami(ClusterOptions(kubeconfig=str(plain))) == rig.service_account("reader")
        assert proxy.tunnels == 2, "NO_PROXY names the server: no tunnel"


def test_impersonation_works_for_who_may_and_is_refused_for_who_may_not(rig: Rig) -> None:
    path = rig.kubeconfig("impersonating", {"token": rig.reader_token})
    reader = ClusterOptions(kubeconfig=str(path))

    as_reader = replace(
        reader, context="admin", impersonate_user=rig.service_account("reader"), impersonate_groups=("a", "b")
    )
    review = Rest(as_reader).request(
        "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=SELF_SUBJECT_REVIEW
    )
    assert review["status"]["userInfo"]["username"] == rig.service_account("reader")
    assert {"a", "b"} <= set(review["status"]["userInfo"]["groups"]), "one group per header line"
    with pytest.raises(ApiError) as refused:
        whoami(replace(reader, impersonate_user="workerfleet-admin", impersonate_groups=("system:masters",)))
    assert refused.value.status == 403
    assert "impersonate" in refused.value.message


def test_a_projected_token_rotated_under_a_running_client_is_picked_up(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.crt").write_text(rig.ca_pem)
    (tmp_path / "namespace").write_text(rig.namespace)
    token = tmp_path / "token"
    token.write_text(rig.reader_token)
    host, port = rig.server.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setattr(credentials, "SERVICE_ACCOUNT_DIRECTORY", tmp_path)
    monkeypatch.setattr(credentials, "DEFAULT_KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    now = [1.0]  # a node booted a second ago
    client = Rest(source=CredentialSource(ClusterOptions(), clock=lambda: now[0]))

    assert _username(client) == rig.service_account("reader")
    token.write_text(rig.rotated_token)
    now[0] += credentials.RESOLVE_AGAIN_SECONDS - 1
    assert _username(client) == rig.service_account("reader"), "read again only when due"
    now[0] += 1
    assert _username(client) == rig.service_account("rotated")


def test_the_audit_log_shows_the_operators_and_kopfs_requests_under_workerfleets_user_agent(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(rig.cluster.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    own = f"own-{uuid.uuid4().hex[:6]}"
    Rest(ClusterOptions()).request(
        "POST",
        f"/api/v1/namespaces/{rig.namespace}/configmaps",
        body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": own}},
    )
    watched = f"kopf-{uuid.uuid4().hex[:6]}"

    async def create_through_kopfs_session() -> None:
        info = await startup.kopf_login()
        async with info.aiohttp_session as session:
            url = f"{info.server}/api/v1/namespaces/{rig.namespace}/configmaps"
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": watched}}
            async with session.post(url, json=body) as response:
                assert response.status == 201, await response.text()

    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        asyncio.run(create_through_kopfs_session())
        assert proxy.tunnels == 1, "kopf's session goes through the same proxy"

    def agents() -> dict[str, str] | None:
        found = {
            event["objectRef"]["name"]: event.get("userAgent", "")
            for event in rig.cluster.audit_writes(namespace=rig.namespace)
            if event["verb"] == "create" and event["objectRef"].get("resource") == "configmaps"
        }
        return found if {own, watched} <= found.keys() else None

    recorded = eventually(agents, what="both creates in the audit log", timeout=20)
    assert recorded[own] == f"workerfleet/{__version__} (operator)"
    assert recorded[watched] == f"workerfleet/{__version__} (operator)"
