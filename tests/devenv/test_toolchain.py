"""The control plane's pinned binaries: version stamping, staging replaces, cache paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from devenv import toolchain

GO_MOD = """\
module k8s.io/kubernetes

require (
\tgithub.com/spf13/cobra v1.10.2
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
\tk8s.io/utils v0.0.0-20260210185600-b8788abfbbc2
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/sample-cli-plugin => ./staging/src/k8s.io/sample-cli-plugin
)
"""


def test_staging_modules_are_those_both_required_and_replaced() -> None:
    # utils is pinned to a pseudo-version, sample-cli-plugin is never required: neither needs a replace.
    assert toolchain.staging_modules(GO_MOD) == ["k8s.io/api", "k8s.io/client-go"]


def test_version_ldflags_stamp_major_minor_and_full_version() -> None:
    flags = toolchain.version_ldflags("k8s.io/component-base/version", "v1.36.3")
    assert "-X k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "-X k8s.io/component-base/version.gitMajor=1" in flags
    assert "-X k8s.io/component-base/version.gitMinor=36" in flags


@pytest.mark.parametrize("version", ["1.36.3", "v1.36", "v1.36.3-rc.1", "latest"])
def test_version_ldflags_refuse_anything_but_a_release(version: str) -> None:
    with pytest.raises(ValueError, match="not a release version"):
        toolchain.version_ldflags("p", version)


def test_every_binary_is_cached_outside_the_repository_under_its_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKERFLEET_CACHE", str(tmp_path))
    binaries = toolchain.binaries()
    assert set(binaries) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
        "kubelet",
        "kwok",
        "helm",
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
    }
    for binary in binaries.values():
        assert binary.path == tmp_path / "bin" / f"{binary.name}-{binary.version}" / binary.name


def test_a_pin_change_means_a_new_path() -> None:
    old = toolchain.Binary("kwok", "v0.8.0")
    new = toolchain.Binary("kwok", "v0.8.1")
    assert old.path != new.path


def test_pins_are_exact_versions() -> None:
    for binary in toolchain.binaries().values():
        toolchain.version_ldflags("p", binary.version)  # raises unless vMAJOR.MINOR.PATCH
    assert toolchain.KUBERNETES_VERSION.startswith(("v1.35.", "v1.36."))
    assert toolchain.ETCD_VERSION.startswith("v3.6.")


def test_helm_is_stamped_like_its_release_build() -> None:
    go_mod = "module helm.sh/helm/v3\n\nrequire (\n\tk8s.io/api v0.37.0\n\tk8s.io/client-go v0.37.0\n)\n"
    flags = toolchain.helm_ldflags("v3.22.0", go_mod)
    assert "-X helm.sh/helm/v3/internal/version.version=v3.22.0" in flags
    assert "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37" in flags
    assert "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1" in flags


def test_helm_stamping_needs_client_go() -> None:
    with pytest.raises(ValueError, match="client-go"):
        toolchain.helm_ldflags("v3.22.0", "module helm.sh/helm/v3\n")
