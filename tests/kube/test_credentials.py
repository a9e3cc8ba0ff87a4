"""Credentials as kubectl resolves them, through the official loader: contexts, merged files, tokens,
exec plugins, oidc, impersonation, proxies; re-resolved on schedule."""

from __future__ import annotations

import base64
import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from workerfleet.kube import credentials
from workerfleet.kube.credentials import ConfigError, CredentialSource, current_namespace, resolve
from workerfleet.kube.options import ClusterOptions

SERVER = "https://127.0.0.1:6443"


def _kubeconfig(
    path: Path,
    user: dict[str, Any],
    *,
    cluster: dict[str, Any] | None = None,
    current: str = "work",
    extra_contexts: tuple[tuple[str, str], ...] = (),
) -> Path:
    contexts = [{"name": "work", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}}]
    contexts += [
        {"name": name, "context": {"cluster": "c", "user": name, "namespace": name}}
        for name, _ in extra_contexts
    ]
    users = [{"name": "u", "user": user}] + [
        {"name": name, "user": {"token": token}} for name, token in extra_contexts
    ]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": current,
                "contexts": contexts,
                "clusters": [{"name": "c", "cluster": cluster or {"server": SERVER + "/"}}],
                "users": users,
            }
        )
    )
    return path


@pytest.fixture(autouse=True)
def _no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def _options(path: Path, **changes: Any) -> ClusterOptions:
    return ClusterOptions(kubeconfig=str(path), **changes)


def test_token_wins_over_token_file_as_the_kubeconfig_format_says(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token\n")
    path = _kubeconfig(tmp_path / "config", {"token": "inline-token", "tokenFile": "token"})

    assert resolve(_options(path)).authorization == "Bearer inline-token"


def test_a_token_file_alone_is_read_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token")
    path = _kubeconfig(tmp_path / "config", {"tokenFile": "token"})

    found = resolve(_options(path))

    assert (found.authorization, found.server, found.namespace) == ("Bearer file-token", SERVER, "team-a")


def test_context_and_namespace_flags_override_the_kubeconfig(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config", {"token": "work-token"}, extra_contexts=(("prod", "prod-token"),))

    chosen = resolve(_options(path, context="prod"))

    assert (chosen.authorization, chosen.namespace) == ("Bearer prod-token", "prod")
    assert resolve(_options(path, context="prod", namespace="other")).namespace == "other"
    assert current_namespace(_options(path, context="prod")) == "prod"
    assert current_namespace(_options(path)) == "team-a"
    with pytest.raises(ConfigError, match="'staging'"):
        resolve(_options(path, context="staging"))


def test_kubeconfig_flag_wins_over_the_environment_and_files_merge_first_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _kubeconfig(tmp_path / "first", {"token": "first"})
    second = _kubeconfig(tmp_path / "second", {"token": "second"})
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")

    assert resolve(ClusterOptions()).authorization == "Bearer first"
    assert resolve(ClusterOptions(kubeconfig=str(second))).authorization == "Bearer second"


def _plugin(
    tmp_path: Path, status: dict[str, Any], *, record: Path | None = None, fail: bool = False
) -> Path:
    plugin = tmp_path / "plugin"
    lines = [f"#!{sys.executable}", "import json, os, pathlib, sys"]
    if record is not None:
        lines.append(f"pathlib.Path({str(record)!r}).write_text(os.environ.get('KUBERNETES_EXEC_INFO', ''))")
    if fail:
        lines.append("sys.stderr.write('login expired: run corp-login'); sys.exit(3)")
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": status}
    lines.append(f"sys.stdout.write({json.dumps(credential)!r})")
    plugin.write_text("\n".join(lines) + "\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    return plugin


def _exec(plugin: Path) -> dict[str, Any]:
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)}}


def test_an_exec_plugin_gets_its_exec_info_and_its_token_lasts_until_it_expires(tmp_path: Path) -> None:
    record = tmp_path / "exec-info"
    plugin = _plugin(
        tmp_path, {"token": "exec-token", "expirationTimestamp": "2999-01-01T00:00:00Z"}, record=record
    )
    path = _kubeconfig(tmp_path / "config", _exec(plugin))

    found = resolve(_options(path))

    assert found.authorization == "Bearer exec-token"
    assert found.expiring
    assert (found.valid_seconds or 0) > 3600
    assert json.loads(record.read_text())["kind"] == "ExecCredential"


def test_an_exec_plugin_may_return_a_client_certificate(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path, {"clientCertificateData": "CERT PEM", "clientKeyData": "KEY PEM"})
    path = _kubeconfig(tmp_path / "config", _exec(plugin))

    found = resolve(_options(path))

    assert (found.certificate_pem, found.private_key_pem, found.authorization) == (
        "CERT PEM",
        "KEY PEM",
        None,
    )


def test_a_failing_exec_plugin_is_an_error_naming_it_and_its_words(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path, {}, fail=True)
    path = _kubeconfig(tmp_path / "config", _exec(plugin))

    with pytest.raises(ConfigError, match=r"exec plugin '.*plugin' failed.*run corp-login"):
        resolve(_options(path))


def test_an_oidc_auth_provider_sends_its_id_token(tmp_path: Path) -> None:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    id_token = f"{part({'alg': 'none'})}.{part({'exp': 32503680000, 'sub': 'ana'})}.c2ln"
    provider = {"name": "oidc", "config": {"id-token": id_token, "idp-issuer-url": "https://127.0.0.1:1"}}
    path = _kubeconfig(tmp_path / "config", {"auth-provider": provider})

    assert resolve(_options(path)).authorization == f"Bearer {id_token}"


def test_username_and_password_send_basic_credentials(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config", {"username": "ana", "password": "s3cret"})

    assert resolve(_options(path)).authorization == "Basic " + base64.b64encode(b"ana:s3cret").decode()


def test_impersonation_from_the_user_and_the_flags_with_kubectl_precedence(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config", {"token": "t", "as": "kim", "as-groups": ["ops"]})

    from_kubeconfig = resolve(_options(path))
    from_flags = resolve(_options(path, impersonate_user="lee", impersonate_groups=("dev", "qa")))

    assert from_kubeconfig.headers() == [
        ("Authorization", "Bearer t"),
        ("Impersonate-User", "kim"),
        ("Impersonate-Group", "ops"),
    ]
    assert (from_flags.impersonate_user, from_flags.impersonate_groups) == ("lee", ("dev", "qa"))


def test_groups_without_a_user_to_impersonate_are_refused(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config", {"token": "t"})

    with pytest.raises(ConfigError, match="needs a user to impersonate"):
        resolve(_options(path, impersonate_groups=("ops",)))


def test_a_ca_beside_insecure_skip_verify_is_refused(tmp_path: Path) -> None:
    ca = base64.b64encode(b"CA PEM").decode()
    cluster = {"server": SERVER, "certificate-authority-data": ca, "insecure-skip-tls-verify": True}
    path = _kubeconfig(tmp_path / "config", {"token": "t"}, cluster=cluster)

    with pytest.raises(ConfigError, match="certificate-authority and insecure-skip-tls-verify"):
        resolve(_options(path))


def test_a_client_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config", {"client-certificate-data": base64.b64encode(b"CERT").decode()})

    with pytest.raises(ConfigError, match="needs its key"):
        resolve(_options(path))


def test_proxy_url_server_name_and_the_proxy_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = {"server": SERVER, "proxy-url": "http://127.0.0.1:3128", "tls-server-name": "kubernetes"}
    configured = _kubeconfig(tmp_path / "configured", {"token": "t"}, cluster=cluster)
    plain = _kubeconfig(tmp_path / "plain", {"token": "t"})
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:8888")

    assert (resolve(_options(configured)).proxy_url, resolve(_options(configured)).tls_server_name) == (
        "http://127.0.0.1:3128",
        "kubernetes",
    )
    assert resolve(_options(plain)).proxy_url == "http://127.0.0.1:8888"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert resolve(_options(plain)).proxy_url is None


def _service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str) -> Path:
    (tmp_path / "token").write_text(token)
    (tmp_path / "ca.crt").write_text("SA CA")
    (tmp_path / "namespace").write_text("workerfleet-system")
    monkeypatch.setattr(credentials, "SERVICE_ACCOUNT_DIRECTORY", tmp_path)
    monkeypatch.setattr(credentials, "DEFAULT_KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return tmp_path / "token"


def test_in_a_pod_the_token_is_read_at_once_even_in_the_hosts_first_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _service_account(tmp_path, monkeypatch, "first-token")
    now = [5.0]  # seconds since the node booted: time.monotonic() early in its life
    source = CredentialSource(ClusterOptions(), clock=lambda: now[0])

    found = source.current()

    assert (found.server, found.authorization, found.ca_pem, found.namespace) == (
        "https://[fd00::1]:443",
        "Bearer first-token",
        "SA CA",
        "workerfleet-system",
    )
    token.write_text("rotated-token")
    now[0] += credentials.RESOLVE_AGAIN_SECONDS - 1
    assert source.current().authorization == "Bearer first-token", "read again only when due"
    now[0] += 1
    assert source.current().authorization == "Bearer rotated-token", "the rotated token is picked up"
    token.write_text("after-401")
    source.invalidate()
    assert source.current().authorization == "Bearer after-401", "a 401 resolves again at once"


def test_a_cluster_without_a_server_or_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    no_server = _kubeconfig(
        tmp_path / "no-server", {"token": "t"}, cluster={"insecure-skip-tls-verify": True}
    )
    missing_ca = _kubeconfig(
        tmp_path / "missing-ca",
        {"token": "t"},
        cluster={"server": SERVER, "certificate-authority": "absent.crt"},
    )

    with pytest.raises(ConfigError, match="names no server"):
        resolve(_options(no_server))
    with pytest.raises(ConfigError, match=r"context 'work'.*absent\.crt"):
        resolve(_options(missing_ca))


def test_without_kubeconfig_or_pod_the_error_names_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(credentials, "DEFAULT_KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBECONFIG", raising=False)

    with pytest.raises(ConfigError, match="no kubeconfig found"):
        resolve(ClusterOptions())
