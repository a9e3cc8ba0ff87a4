"""Credentials as kubectl resolves them, read by the official client's loader (`kubernetes.config`).

The loader covers the kubeconfig format: merged files, contexts, certificates, tokens, exec plugins
(tokens or client certificates, `KUBERNETES_EXEC_INFO`), auth-providers (oidc), `proxy-url`,
`tls-server-name`. On top of it, for what the loader lacks: impersonation (`as`, `as-groups`, the
`--as`/`--as-group` flags), errors instead of silently sending no credentials (a failing exec plugin,
a certificate without its key, a CA beside `insecure-skip-tls-verify`), proxy environment variables
with NO_PROXY, and re-resolving on a schedule so rotated tokens and certificates are picked up.
Only the loader is imported (`kubernetes.config`, and the `Configuration` it fills), none of the
generated API: the request path stays the project's own (`rest.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes.client import Configuration
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.exec_provider import ExecProvider
from kubernetes.config.kube_config import KubeConfigLoader, KubeConfigMerger

from workerfleet.kube.options import ClusterOptions

SERVICE_ACCOUNT_DIRECTORY = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = "~/.kube/config"
RESOLVE_AGAIN_SECONDS = 60.0
"""Token files (a pod's projected service-account token), certificate and CA files are read again this
often: the kubelet rotates the token, cert-manager the certificates, and nothing restarts us."""
EXPIRY_MARGIN_SECONDS = 30.0
"""An exec plugin's or oidc token is fetched again this long before it expires."""


class ServerNameContext(ssl.SSLContext):
    """A TLS context that checks the server's certificate for `server_name` (a kubeconfig's
    `tls-server-name`) rather than the host connected to, and sends it as SNI."""

    server_name: str | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        if self.server_name:
            kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        if self.server_name:
            kwargs["server_hostname"] = self.server_name
        return super().wrap_bio(*args, **kwargs)


class ConfigError(RuntimeError):
    """No usable credentials: no service account, no kubeconfig, or one that cannot work as written."""


@dataclass(frozen=True)
class ApiCredentials:
    """Where the API server is, how to reach it, and how to prove who we are to it."""

    server: str
    ca_pem: str | None = None
    insecure: bool = False
    certificate_pem: str | None = None
    private_key_pem: str | None = None
    authorization: str | None = None
    """The Authorization header: `Bearer <token>`, or `Basic <...>` for a username and password."""
    tls_server_name: str | None = None
    proxy_url: str | None = None
    impersonate_user: str | None = None
    impersonate_groups: tuple[str, ...] = ()
    namespace: str = "default"
    valid_seconds: float | None = RESOLVE_AGAIN_SECONDS
    """How long these are used before resolving again; None: until the server answers 401."""
    expiring: bool = False
    """The token itself expires (an exec plugin's, oidc): `valid_seconds` is its remaining life."""

    @property
    def fingerprint(self) -> str:
        """A digest of everything these credentials present to the server: equal fingerprints are the
        same credentials, whatever their validity says (a refused token read again is still refused)."""
        presented = (
            self.server,
            self.authorization,
            *self.tls_material,
            self.tls_server_name,
            self.proxy_url,
            self.impersonate_user,
            *self.impersonate_groups,
        )
        return hashlib.sha256(json.dumps(presented).encode()).hexdigest()

    @property
    def tls_material(self) -> tuple[str | None, ...]:
        """What the TLS connections depend on: when it changes, new connections are made."""
        return (self.ca_pem, str(self.insecure), self.certificate_pem, self.private_key_pem)

    def ssl_context(self) -> ssl.SSLContext:
        """Verified against the CA, presenting the client certificate; checked against
        `tls_server_name` instead of the server's host when one is set (both transports use this)."""
        context = ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
        context.server_name = self.tls_server_name
        if self.ca_pem:
            context.load_verify_locations(cadata=self.ca_pem)
        else:
            context.load_default_certs()
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

    def headers(self) -> list[tuple[str, str]]:
        """Authorization and impersonation headers; one Impersonate-Group header per group, since the
        API server reads each header line as one group (a comma is part of a group's name)."""
        headers = []
        if self.authorization:
            headers.append(("Authorization", self.authorization))
        if self.impersonate_user:
            headers.append(("Impersonate-User", self.impersonate_user))
        headers += [("Impersonate-Group", group) for group in self.impersonate_groups]
        return headers


def kubeconfig_paths(options: ClusterOptions) -> list[Path]:
    """--kubeconfig alone, else every file in KUBECONFIG, else ~/.kube/config: kubectl's order."""
    if options.kubeconfig:
        return [Path(options.kubeconfig).expanduser()]
    configured = os.environ.get("KUBECONFIG")
    if configured:
        return [Path(path).expanduser() for path in configured.split(os.pathsep) if path]
    return [Path(DEFAULT_KUBECONFIG).expanduser()]


def _in_cluster_available() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("KUBERNETES_SERVICE_PORT"))


def uses_kubeconfig(options: ClusterOptions) -> bool:
    """A kubeconfig when one is named or exists, or a context is asked for; a pod's service account
    otherwise (client-go's rule, so kubectl in a pod and workerfleet agree)."""
    if options.kubeconfig or options.context or os.environ.get("KUBECONFIG"):
        return True
    return Path(DEFAULT_KUBECONFIG).expanduser().exists() or not _in_cluster_available()


class _Loader(KubeConfigLoader):
    """The official loader, with an exec plugin's failure raised instead of logged and ignored, and
    its client certificate kept in memory."""

    exec_certificate: tuple[str, str] | None = None

    def _load_from_exec_plugin(self) -> bool | None:
        user: Any = self._user
        cluster: Any = self._cluster
        if "exec" not in user:
            return None
        command = user["exec"].safe_get("command")
        try:
            base_path = self._get_base_path(cluster.path)
            status = ExecProvider(user["exec"], base_path, cluster).run()
        except ConfigException as error:
            raise ConfigError(f"the kubeconfig's exec plugin {command!r} failed: {error}") from None
        if status.get("token"):
            self.token = f"Bearer {status['token']}"
        elif status.get("clientCertificateData") and status.get("clientKeyData"):
            self.exec_certificate = (str(status["clientCertificateData"]), str(status["clientKeyData"]))
        else:
            raise ConfigError(
                f"the kubeconfig's exec plugin {command!r} returned neither a token nor a client "
                "certificate with its key (status.token, status.clientCertificateData/clientKeyData)"
            )
        if status.get("expirationTimestamp"):
            self.expiry = datetime.fromisoformat(str(status["expirationTimestamp"]).replace("Z", "+00:00"))
        return True


def _read(path: str | None) -> str | None:
    return Path(path).read_text() if path else None


def _environment_proxy(server: str) -> str | None:
    """HTTPS_PROXY (or HTTP_PROXY for an http server) unless NO_PROXY names the host."""
    proxies = urllib.request.getproxies()
    host = urlsplit(server).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    return proxies.get(urlsplit(server).scheme)


def _seconds_until(expiry: datetime | None) -> float | None:
    if expiry is None:
        return None
    expiry = expiry if expiry.tzinfo else expiry.replace(tzinfo=UTC)
    return max((expiry - datetime.now(UTC)).total_seconds() - EXPIRY_MARGIN_SECONDS, 0.0)


def _impersonation(user: Any, options: ClusterOptions) -> tuple[str | None, tuple[str, ...]]:
    """kubectl's precedence: --as and --as-group over the kubeconfig user's `as` and `as-groups`."""
    impersonate = options.impersonate_user or (user.safe_get("as") if user else None) or None
    groups = options.impersonate_groups or tuple((user.safe_get("as-groups") if user else None) or ())
    if groups and not impersonate:
        raise ConfigError("impersonating groups needs a user to impersonate: add --as (or `as:` to the user)")
    return impersonate, tuple(str(group) for group in groups)


def from_kubeconfig(options: ClusterOptions) -> ApiCredentials:
    """The credentials of the chosen (else the current) context of the merged kubeconfig files."""
    paths = kubeconfig_paths(options)
    named = ", ".join(map(str, paths))
    merged = KubeConfigMerger(os.pathsep.join(map(str, paths))).config
    if merged is None:
        raise ConfigError(f"no kubeconfig found at {named}: pass --kubeconfig, or set KUBECONFIG")
    context_name = options.context or merged.safe_get("current-context")
    if not context_name:
        raise ConfigError(f"no current context in {named}: pass --context, or set current-context")
    try:
        loader = _Loader(config_dict=merged, active_context=context_name, config_base_path=None)
        configuration = Configuration()
        loader.load_and_set(configuration)
        authorization = configuration.get_api_key_with_prefix("BearerToken")
    except (ConfigException, OSError, ValueError) as error:
        # OSError: a file the kubeconfig names, or an oidc provider that refreshes a token, unreachable.
        raise ConfigError(f"kubeconfig {named}, context {context_name!r}: {error}") from None
    # The loader keeps no public view of the active context, user and cluster.
    user: Any = loader._user
    cluster: Any = loader._cluster
    context: Any = loader._current_context
    where = f"kubeconfig {named}, context {context_name!r}"
    if not cluster.safe_get("server"):
        raise ConfigError(f"{where}: its cluster names no server")
    certificate_pem, key_pem = loader.exec_certificate or (
        _read(configuration.cert_file),
        _read(configuration.key_file),
    )
    if bool(certificate_pem) != bool(key_pem):
        raise ConfigError(f"{where}: a client certificate needs its key (client-certificate and client-key)")
    ca_pem = _read(configuration.ssl_ca_cert)
    insecure = not configuration.verify_ssl
    if ca_pem and insecure:
        raise ConfigError(
            f"{where}: certificate-authority and insecure-skip-tls-verify together: remove one "
            "(kubectl refuses this too)"
        )
    if user and user.safe_get("username") and not user.safe_get("password"):
        raise ConfigError(f"{where}: a username needs its password")
    impersonate, groups = _impersonation(user, options)
    server = str(configuration.host).rstrip("/")
    namespace = options.namespace or context["context"].safe_get("namespace")
    refreshes = user is not None and bool(user.safe_get("exec") or user.safe_get("auth-provider"))
    return ApiCredentials(
        server=server,
        ca_pem=ca_pem,
        insecure=insecure,
        certificate_pem=certificate_pem,
        private_key_pem=key_pem,
        authorization=authorization,
        tls_server_name=cluster.safe_get("tls-server-name"),
        proxy_url=cluster.safe_get("proxy-url") or _environment_proxy(server),
        impersonate_user=impersonate,
        impersonate_groups=groups,
        namespace=str(namespace or "default"),
        valid_seconds=_seconds_until(getattr(loader, "expiry", None)) if refreshes else RESOLVE_AGAIN_SECONDS,
        expiring=refreshes and getattr(loader, "expiry", None) is not None,
    )


def in_cluster(options: ClusterOptions) -> ApiCredentials:
    """The pod's service account: its token and CA read now (the files are rotated under us)."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST", ""), os.environ.get("KUBERNETES_SERVICE_PORT", "")
    token_file, ca_file = SERVICE_ACCOUNT_DIRECTORY / "token", SERVICE_ACCOUNT_DIRECTORY / "ca.crt"
    if not host or not port or not token_file.exists() or not ca_file.exists():
        raise ConfigError(
            f"not in a pod with a service account ({token_file}) and no kubeconfig at "
            f"{', '.join(map(str, kubeconfig_paths(options)))}: pass --kubeconfig, or set KUBECONFIG"
        )
    token = token_file.read_text().strip()
    namespace_file = SERVICE_ACCOUNT_DIRECTORY / "namespace"
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return ApiCredentials(
        server=server,
        ca_pem=ca_file.read_text(),
        authorization=f"Bearer {token}" if token else None,
        proxy_url=_environment_proxy(server),
        impersonate_user=options.impersonate_user,
        impersonate_groups=options.impersonate_groups,
        namespace=options.namespace
        or (namespace_file.read_text().strip() if namespace_file.exists() else "default"),
    )


def resolve(options: ClusterOptions) -> ApiCredentials:
    """In a pod without a kubeconfig, its service account; otherwise the kubeconfig, as kubectl finds it."""
    if options.impersonate_groups and not options.impersonate_user and not uses_kubeconfig(options):
        raise ConfigError("--as-group needs --as: the user whose groups are impersonated")
    return from_kubeconfig(options) if uses_kubeconfig(options) else in_cluster(options)


def origin(options: ClusterOptions) -> str:
    """Where the credentials come from, for messages that tell an operator which one to replace."""
    if not uses_kubeconfig(options):
        return f"the pod's service-account token {SERVICE_ACCOUNT_DIRECTORY / 'token'}"
    context = f"context {options.context!r}" if options.context else "its current context"
    return f"kubeconfig {', '.join(map(str, kubeconfig_paths(options)))} ({context})"


def current_namespace(options: ClusterOptions) -> str:
    """-n, else the context's namespace, else the pod's, else `default`, without running exec plugins."""
    if options.namespace:
        return options.namespace
    if not uses_kubeconfig(options):
        namespace_file = SERVICE_ACCOUNT_DIRECTORY / "namespace"
        return namespace_file.read_text().strip() if namespace_file.exists() else "default"
    merged = KubeConfigMerger(os.pathsep.join(map(str, kubeconfig_paths(options)))).config
    if merged is None:
        return "default"
    name = options.context or merged.safe_get("current-context")
    for context in merged.safe_get("contexts") or []:
        if context.safe_get("name") == name:
            return str((context.safe_get("context") or {}).get("namespace") or "default")
    return "default"


class CredentialSource:
    """The credentials in force, resolved again when they are due (a token file's, a certificate's
    rotation; an exec plugin's expiry) or after the server answered 401."""

    def __init__(
        self,
        options: ClusterOptions,
        *,
        resolver: Callable[[ClusterOptions], ApiCredentials] = resolve,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self._resolver = resolver
        self._clock = clock
        self._lock = threading.Lock()
        self._current: ApiCredentials | None = None
        self._due: float | None = None

    def current(self) -> ApiCredentials:
        with self._lock:
            now = self._clock()
            if self._current is None or (self._due is not None and now >= self._due):
                self._current = self._resolver(self.options)
                valid = self._current.valid_seconds
                self._due = None if valid is None else now + valid
            return self._current

    def invalidate(self) -> None:
        """The server refused these credentials: resolve them again before the next request."""
        with self._lock:
            self._current = None
