"""The operator's own Kubernetes REST client: JSON in, JSON out, for the dozen kinds it touches.

The official client builds a model object per field of every response and costs tens of MiB at
import; an operator with thousands of pools needs neither. This module resolves credentials (in-cluster
service account, or a kubeconfig with certificates, tokens or an exec plugin), maps kinds to paths
through discovery, and sends requests over one pooled, verified TLS connection set.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
import yaml

SERVICE_ACCOUNT_DIRECTORY = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
"""A projected service-account token is rotated by the kubelet: read the file again this often."""
DISCOVERY_RECHECK_SECONDS = 60.0
"""How long a group-version's discovered kinds are trusted when a kind is missing from them (KEDA's,
before KEDA is installed), so a missing kind costs one discovery request a minute."""
EXEC_TOKEN_DEFAULT_SECONDS = 3600.0
"""How long an exec plugin's token without an expiry is used before the plugin runs again."""
EXEC_TOKEN_MARGIN_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 30.0


class ConfigError(RuntimeError):
    """No usable credentials: no service account, no kubeconfig, or one this client cannot use."""


class ApiError(Exception):
    """The API server refused a request; `status` is the HTTP status, `message` the server's words."""

    def __init__(self, status: int, reason: str, message: str, details: Mapping[str, Any] | None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details = dict(details or {})


class KindNotServedError(LookupError):
    """The API server serves no such kind, e.g. KEDA's ScaledObject where KEDA is not installed."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"the API server serves no {kind} ({api_version})")
        self.kind = kind


@dataclass
class ApiCredentials:
    """Where the API server is and how to prove who we are to it."""

    server: str
    ca_pem: str | None = None
    insecure: bool = False
    certificate_pem: str | None = None
    private_key_pem: str | None = None
    token: str | None = None
    token_file: Path | None = None
    exec_command: Mapping[str, Any] | None = None
    namespace: str = "default"
    _token_read_at: float = field(default=0.0, repr=False)
    _token_expires_at: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def bearer_token(self) -> str | None:
        """The current token: read again from its file, or from the exec plugin, when due."""
        with self._lock:
            now = time.monotonic()
            if self.token_file is not None and now - self._token_read_at > TOKEN_REREAD_SECONDS:
                self.token = self.token_file.read_text().strip()
                self._token_read_at = now
            if self.exec_command is not None and (self.token is None or now >= self._token_expires_at):
                self.token, lifetime = _exec_token(self.exec_command)
                self._token_expires_at = now + lifetime
            return self.token

    def ssl_context(self) -> ssl.SSLContext:
        context = (
            ssl.create_default_context(cadata=self.ca_pem) if self.ca_pem else ssl.create_default_context()
        )
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certificate_pem and self.private_key_pem:
            # load_cert_chain reads files only: write them to a private directory for the moment it reads.
            with tempfile.TemporaryDirectory() as private:
                certificate, key = Path(private) / "tls.crt", Path(private) / "tls.key"
                certificate.write_text(self.certificate_pem)
                key.touch(mode=0o600)
                key.write_text(self.private_key_pem)
                context.load_cert_chain(certificate, key)
        return context


def _exec_token(command: Mapping[str, Any]) -> tuple[str, float]:
    """Run a kubeconfig exec credential plugin (as kubectl does); its token and how long to trust it."""
    environment = {**os.environ, **{item["name"]: item["value"] for item in command.get("env") or []}}
    result = subprocess.run(
        [command["command"], *(command.get("args") or [])],
        capture_output=True,
        check=False,
        env=environment,
        timeout=60,
    )
    if result.returncode != 0:
        raise ConfigError(
            f"the kubeconfig's exec plugin {command['command']!r} failed: {result.stderr.decode()[:200]}"
        )
    status = json.loads(result.stdout).get("status") or {}
    if not status.get("token"):
        raise ConfigError(f"the kubeconfig's exec plugin {command['command']!r} returned no token")
    expires = status.get("expirationTimestamp")
    if not expires:
        return str(status["token"]), EXEC_TOKEN_DEFAULT_SECONDS
    remaining = datetime.fromisoformat(str(expires).replace("Z", "+00:00")) - datetime.now(UTC)
    return str(status["token"]), max(remaining.total_seconds() - EXEC_TOKEN_MARGIN_SECONDS, 0.0)


def _pem(entry: Mapping[str, Any], key: str, base: Path) -> str | None:
    """A PEM given inline (`<key>-data`, base64) or as a file path (relative to the kubeconfig)."""
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"]).decode()
    if entry.get(key):
        return (base / os.path.expanduser(str(entry[key]))).read_text()
    return None


def kubeconfig_paths() -> list[Path]:
    configured = os.environ.get("KUBECONFIG")
    if configured:
        return [Path(path).expanduser() for path in configured.split(os.pathsep) if path]
    return [Path("~/.kube/config").expanduser()]


def _merged_kubeconfig() -> dict[str, Any]:
    """The kubeconfig files merged as kubectl merges them: the first to name something wins."""
    merged: dict[str, Any] = {
        "current-context": None,
        "contexts": {},
        "clusters": {},
        "users": {},
        "bases": {},
    }
    for path in kubeconfig_paths():
        if not path.exists():
            continue
        config = yaml.safe_load(path.read_text()) or {}
        merged["current-context"] = merged["current-context"] or config.get("current-context")
        for section, inner in (("contexts", "context"), ("clusters", "cluster"), ("users", "user")):
            for item in config.get(section) or []:
                if item["name"] not in merged[section]:
                    merged[section][item["name"]] = item.get(inner) or {}
                    merged["bases"][(section, item["name"])] = path.parent
    return merged


def kubeconfig_credentials() -> ApiCredentials:
    merged = _merged_kubeconfig()
    name = merged["current-context"]
    if not name or name not in merged["contexts"]:
        raise ConfigError(
            f"no current context in {', '.join(map(str, kubeconfig_paths()))}: set one, or KUBECONFIG"
        )
    context = merged["contexts"][name]
    cluster = merged["clusters"].get(context.get("cluster"), {})
    user = merged["users"].get(context.get("user"), {})
    cluster_base = merged["bases"].get(("clusters", context.get("cluster")), Path("."))
    user_base = merged["bases"].get(("users", context.get("user")), Path("."))
    if user.get("auth-provider"):
        raise ConfigError(
            f"kubeconfig user {context.get('user')!r} uses an auth-provider: use an exec plugin instead"
        )
    return ApiCredentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_pem=_pem(cluster, "certificate-authority", cluster_base),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        certificate_pem=_pem(user, "client-certificate", user_base),
        private_key_pem=_pem(user, "client-key", user_base),
        token=user.get("token"),
        token_file=(user_base / user["tokenFile"]) if user.get("tokenFile") else None,
        exec_command=user.get("exec"),
        namespace=str(context.get("namespace") or "default"),
    )


def in_cluster_credentials() -> ApiCredentials | None:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    token = SERVICE_ACCOUNT_DIRECTORY / "token"
    if not host or not port or not token.exists():
        return None
    namespace_file = SERVICE_ACCOUNT_DIRECTORY / "namespace"
    host = f"[{host}]" if ":" in host else host
    return ApiCredentials(
        server=f"https://{host}:{port}",
        ca_pem=(SERVICE_ACCOUNT_DIRECTORY / "ca.crt").read_text(),
        token_file=token,
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else "default",
    )


def load_credentials() -> ApiCredentials:
    """In a pod, its service account; elsewhere the kubeconfig, as kubectl finds it."""
    return in_cluster_credentials() or kubeconfig_credentials()


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context, as kubectl picks it."""
    try:
        merged = _merged_kubeconfig()
    except (OSError, yaml.YAMLError):
        return "default"
    context = merged["contexts"].get(merged["current-context"]) or {}
    return str(context.get("namespace") or "default")


def _decoded(data: bytes) -> Any:
    """The JSON of a response; None when there is none (some errors come as plain text)."""
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Resource:
    """Where a kind lives: its collection's plural name, and whether it is namespaced."""

    plural: str
    namespaced: bool


class Rest:
    """Requests to one API server, over a pool of kept-alive connections."""

    def __init__(self, credentials: ApiCredentials | None = None, *, pool_size: int = 10) -> None:
        self.credentials = credentials or load_credentials()
        self._http = urllib3.PoolManager(
            maxsize=pool_size,
            block=False,
            ssl_context=self.credentials.ssl_context(),
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS),
            retries=False,
        )
        self._discovered: dict[str, tuple[dict[str, Resource], float]] = {}
        self._discovery_lock = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one request; the decoded JSON answer, or ApiError when the server refuses."""
        headers = {"Accept": "application/json"}
        token = self.credentials.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = None
        if body is not None:
            headers["Content-Type"] = content_type
            payload = json.dumps(body).encode()
        url = self.credentials.server + path + (f"?{urlencode(query)}" if query else "")
        response = self._http.request(method, url, body=payload, headers=headers)
        answer = _decoded(response.data)
        if response.status >= 400:
            status = answer if isinstance(answer, dict) else {}
            raise ApiError(
                response.status,
                str(status.get("reason") or response.reason or ""),
                str(status.get("message") or response.data[:200].decode(errors="replace")),
                status.get("details"),
            )
        return answer

    def resource(self, api_version: str, kind: str) -> Resource:
        """The kind's resource from discovery; KindNotServedError when the server has none."""
        with self._discovery_lock:
            known, fetched = self._discovered.get(api_version, ({}, 0.0))
            if kind not in known and time.monotonic() - fetched > DISCOVERY_RECHECK_SECONDS:
                known = self._discover(api_version)
                self._discovered[api_version] = (known, time.monotonic())
        if kind not in known:
            raise KindNotServedError(api_version, kind)
        return known[kind]

    def _discover(self, api_version: str) -> dict[str, Resource]:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            listing = self.request("GET", prefix)
        except ApiError as error:
            if error.status == 404:
                return {}
            raise
        return {
            item["kind"]: Resource(item["name"], bool(item["namespaced"]))
            for item in listing.get("resources") or []
            if "/" not in item["name"]
        }

    def path(
        self, api_version: str, kind: str, namespace: str = "", name: str = "", subresource: str = ""
    ) -> str:
        """The URL path of a kind's collection, or of one object (and its subresource)."""
        resource = self.resource(api_version, kind)
        parts = ["/api/v1" if api_version == "v1" else f"/apis/{api_version}"]
        if resource.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(resource.plural)
        if name:
            parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)
