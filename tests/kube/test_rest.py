"""Credentials as kubectl resolves them: kubeconfig files, inline data, tokens, exec plugins."""

from __future__ import annotations

import base64
import json
import stat
import sys
from pathlib import Path

import pytest
import yaml

from workerfleet.kube import rest
from workerfleet.kube.rest import ConfigError, current_namespace, kubeconfig_credentials


def _kubeconfig(path: Path, user: dict[str, object], *, cluster: dict[str, object] | None = None) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "work",
                "contexts": [
                    {"name": "work", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}}
                ],
                "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443/"}}],
                "users": [{"name": "u", "user": user}],
            }
        )
    )
    return path


def test_inline_certificate_data_is_decoded_and_the_server_loses_its_trailing_slash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    path = _kubeconfig(tmp_path / "config", {"client-certificate-data": encoded, "client-key-data": encoded})
    monkeypatch.setenv("KUBECONFIG", str(path))

    credentials = kubeconfig_credentials()

    assert credentials.server == "https://127.0.0.1:6443"
    assert credentials.certificate_pem == "-----BEGIN CERTIFICATE-----\n"
    assert credentials.namespace == "team-a"
    assert current_namespace() == "team-a"


def test_file_paths_are_relative_to_the_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ca.crt").write_text("CA PEM")
    (tmp_path / "token").write_text("file-token\n")
    path = _kubeconfig(
        tmp_path / "config",
        {"tokenFile": "token"},
        cluster={"server": "https://10.0.0.1", "certificate-authority": "ca.crt"},
    )
    monkeypatch.setenv("KUBECONFIG", str(path))

    credentials = kubeconfig_credentials()

    assert credentials.ca_pem == "CA PEM"
    assert credentials.bearer_token() == "file-token"


def test_the_first_kubeconfig_to_name_a_context_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _kubeconfig(tmp_path / "first", {"token": "first"})
    second = _kubeconfig(tmp_path / "second", {"token": "second"})
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")

    assert kubeconfig_credentials().bearer_token() == "first"


def test_an_exec_plugin_supplies_the_token_and_runs_again_when_it_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = tmp_path / "runs"
    plugin = tmp_path / "plugin"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "exec-token", "expirationTimestamp": "2000-01-01T00:00:00Z"},
    }
    plugin.write_text(
        f"#!{sys.executable}\n"
        "import pathlib, sys\n"
        f"runs = pathlib.Path({str(counter)!r})\n"
        "runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else '1')\n"
        f"sys.stdout.write({json.dumps(credential)!r})\n"
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    path = _kubeconfig(tmp_path / "config", {"exec": {"command": str(plugin), "args": []}})
    monkeypatch.setenv("KUBECONFIG", str(path))
    credentials = kubeconfig_credentials()

    assert credentials.bearer_token() == "exec-token"
    assert credentials.bearer_token() == "exec-token"

    assert counter.read_text() == "2", "a token that expired already is fetched again on the next request"


def test_a_failing_exec_plugin_names_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _kubeconfig(tmp_path / "config", {"exec": {"command": "false"}})
    monkeypatch.setenv("KUBECONFIG", str(path))

    with pytest.raises(ConfigError, match="exec plugin 'false' failed"):
        kubeconfig_credentials().bearer_token()


def test_an_auth_provider_is_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _kubeconfig(tmp_path / "config", {"auth-provider": {"name": "gcp"}})
    monkeypatch.setenv("KUBECONFIG", str(path))

    with pytest.raises(ConfigError, match="use an exec plugin instead"):
        kubeconfig_credentials()


def test_no_current_context_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))

    with pytest.raises(ConfigError, match="no current context"):
        kubeconfig_credentials()
    assert current_namespace() == "default"


def test_in_cluster_credentials_need_the_service_host_and_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("SA CA")
    (tmp_path / "namespace").write_text("workerfleet-system")
    monkeypatch.setattr(rest, "SERVICE_ACCOUNT_DIRECTORY", tmp_path)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert rest.in_cluster_credentials() is None

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    credentials = rest.in_cluster_credentials()

    assert credentials is not None
    assert credentials.server == "https://[fd00::1]:443"
    assert (credentials.bearer_token(), credentials.ca_pem, credentials.namespace) == (
        "sa-token",
        "SA CA",
        "workerfleet-system",
    )
