"""Build the local control plane's binaries from the Go module proxy, pinned and cached.

Every binary lands in ``<cache>/bin/<name>-<version>/<name>``: a new pin means a new path, so a
pin change rebuilds and an unchanged pin reuses what is there. The cache lives outside the
repository (``$WORKERFLEET_CACHE``, default ``~/.cache/workerfleet``); Go's own module and build
caches are reused as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"
# Only KEDA's CRDs, to check the ScaledObjects the operator writes against KEDA's own schema.
KEDA_VERSION = "v2.21.0"
KEDA_CRDS = ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml")

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet")
# The real node's runtime: kubelet 1.36 needs containerd 2 (the RuntimeConfig CRI call). runc and
# the CNI plugins come from Debian (scripts/debian-packages).
CONTAINERD_VERSION = "v2.4.2"
CONTAINERD_COMMANDS = ("containerd", "containerd-shim-runc-v2", "ctr")
# kwok does nothing without stages; these are the pinned release's own defaults (what kwokctl uses).
KWOK_DEFAULT_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def cache_root() -> Path:
    return Path(os.environ.get("WORKERFLEET_CACHE", Path.home() / ".cache" / "workerfleet"))


@dataclass(frozen=True)
class Binary:
    name: str
    version: str

    @property
    def path(self) -> Path:
        return cache_root() / "bin" / f"{self.name}-{self.version}" / self.name


def binaries() -> dict[str, Binary]:
    pinned = [Binary(name, KUBERNETES_VERSION) for name in KUBERNETES_COMMANDS]
    pinned += [
        Binary("etcd", ETCD_VERSION),
        Binary("kwok", KWOK_VERSION),
        Binary("helm", HELM_VERSION),
    ]
    pinned += [Binary(name, CONTAINERD_VERSION) for name in CONTAINERD_COMMANDS]
    return {binary.name: binary for binary in pinned}


def kwok_stages_path() -> Path:
    return binaries()["kwok"].path.parent / "stages.yaml"


def keda_crd_paths() -> list[Path]:
    return [cache_root() / "keda" / KEDA_VERSION / name for name in KEDA_CRDS]


def write_keda_crds(version: str) -> None:
    info = json.loads(_run(["go", "mod", "download", "-json", f"github.com/kedacore/keda/v2@{version}"]))
    bases = Path(info["Dir"]) / "config" / "crd" / "bases"
    for path in keda_crd_paths():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((bases / path.name).read_text())


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOTOOLCHAIN"] = "local"
    env["CGO_ENABLED"] = "0"
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    return env


def _run(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    print("+", " ".join(args), flush=True)
    result = subprocess.run(
        args, cwd=cwd, env=env or _go_env(), check=True, stdout=subprocess.PIPE, text=True
    )
    return result.stdout


def version_ldflags(package: str, version: str) -> list[str]:
    """`-X` flags that stamp a release version, so clients (helm, kwok) read the server right."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if match is None:
        raise ValueError(f"not a release version: {version!r}")
    major, minor = match.groups()
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    return [f"-X {package}.{key}={value}" for key, value in values.items()]


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """Staging modules that k8s.io/kubernetes requires at v0.0.0 and replaces with its own tree.

    Outside that tree each must point at its published tag, v0.<minor>.<patch>.
    """
    replaced = set(re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", kubernetes_go_mod, flags=re.M))
    required = set(re.findall(r"^\s*(k8s\.io/[\w.-]+) v0\.0\.0\b", kubernetes_go_mod, flags=re.M))
    return sorted(replaced & required)


def _write_module(directory: Path, module: str, requires: dict[str, str], replaces: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"module {module}", "", "go 1.26.0", ""]
    lines += [f"require {path} {version}" for path, version in requires.items()]
    lines += [""] + [f"replace {path} => {path} {version}" for path, version in replaces.items()]
    (directory / "go.mod").write_text("\n".join(lines) + "\n")


def build_kubernetes(version: str) -> None:
    staging_version = "v0." + version.removeprefix("v1.")
    workdir = cache_root() / "build" / f"kubernetes-{version}"
    _write_module(
        workdir,
        "workerfleet.local/kubernetes-binaries",
        {"k8s.io/kubernetes": version},
        {module: staging_version for module in staging_modules(_go_mod_of("k8s.io/kubernetes", version))},
    )
    (workdir / "go.sum").touch()
    ldflags = ["-s", "-w"]
    ldflags += version_ldflags("k8s.io/component-base/version", version)
    ldflags += version_ldflags("k8s.io/client-go/pkg/version", version)
    output = workdir / "out"
    output.mkdir(exist_ok=True)
    packages = [f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_COMMANDS]
    _run(
        ["go", "build", "-trimpath", "-ldflags", " ".join(ldflags), "-o", f"{output}/", *packages],
        cwd=workdir,
    )
    for name in KUBERNETES_COMMANDS:
        _install(output / name, Binary(name, version))


def build_etcd(version: str) -> None:
    workdir = cache_root() / "build" / f"etcd-{version}"
    _write_module(workdir, "workerfleet.local/etcd", {"go.etcd.io/etcd/server/v3": version}, {})
    (workdir / "go.sum").touch()
    (workdir / "main.go").write_text(
        'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n"
    )
    _run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", "etcd", "."], cwd=workdir)
    _install(workdir / "etcd", Binary("etcd", version))


def build_containerd(version: str) -> None:
    """containerd, its runc shim and ctr (which imports the images), in one `go install`."""
    gobin = cache_root() / "build" / f"containerd-{version}"
    gobin.mkdir(parents=True, exist_ok=True)
    env = {**_go_env(), "GOBIN": str(gobin), "GOFLAGS": "-buildvcs=false"}
    module = "github.com/containerd/containerd/v2"
    flags = f"-s -w -X {module}/version.Version={version}"
    packages = [f"{module}/cmd/{name}@{version}" for name in CONTAINERD_COMMANDS]
    _run(["go", "install", "-trimpath", "-ldflags", flags, *packages], env=env)
    for name in CONTAINERD_COMMANDS:
        _install(gobin / name, Binary(name, version))


def write_kwok_stages(version: str) -> None:
    info = json.loads(_run(["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{version}"]))
    module = Path(info["Dir"])
    documents = [(module / stage).read_text().strip() for stage in KWOK_DEFAULT_STAGES]
    kwok_stages_path().write_text("\n---\n".join(documents) + "\n")


def go_install(binary: Binary, package: str, ldflags: list[str] | None = None) -> None:
    gobin = cache_root() / "build" / f"{binary.name}-{binary.version}"
    gobin.mkdir(parents=True, exist_ok=True)
    env_gobin = {**_go_env(), "GOBIN": str(gobin), "GOFLAGS": "-buildvcs=false"}
    flags = " ".join(["-s", "-w", *(ldflags or [])])
    _run(["go", "install", "-trimpath", "-ldflags", flags, f"{package}@{binary.version}"], env=env_gobin)
    _install(gobin / binary.name, binary)


def helm_ldflags(version: str, helm_go_mod: str) -> list[str]:
    """The flags helm's release build sets: its version, and the Kubernetes version it assumes
    without a cluster (`helm template`, `helm lint`), taken from the client-go it requires."""
    match = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", helm_go_mod, flags=re.M)
    if match is None:
        raise ValueError("helm's go.mod does not require k8s.io/client-go")
    minor = match.group(1)
    flags = [
        f"-X helm.sh/helm/v3/internal/version.version={version}",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    ]
    for package in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {package}.k8sVersionMajor=1", f"-X {package}.k8sVersionMinor={minor}"]
    return flags


def _go_mod_of(module: str, version: str) -> str:
    info = json.loads(_run(["go", "mod", "download", "-json", f"{module}@{version}"]))
    return Path(info["GoMod"]).read_text()


def _install(built: Path, binary: Binary) -> None:
    binary.path.parent.mkdir(parents=True, exist_ok=True)
    temporary = binary.path.with_suffix(".partial")
    shutil.copy2(built, temporary)
    temporary.replace(binary.path)


def ensure(names: list[str] | None = None) -> dict[str, Path]:
    """Build every pinned binary that is not cached yet; return name -> path."""
    wanted = binaries()
    selected = [wanted[name] for name in (names or list(wanted))]
    missing = {binary.name for binary in selected if not binary.path.exists()}
    if missing & set(KUBERNETES_COMMANDS):
        build_kubernetes(KUBERNETES_VERSION)
    if "etcd" in missing:
        build_etcd(ETCD_VERSION)
    if missing & set(CONTAINERD_COMMANDS):
        build_containerd(CONTAINERD_VERSION)
    if "kwok" in missing:
        go_install(wanted["kwok"], "sigs.k8s.io/kwok/cmd/kwok")
    if wanted["kwok"] in selected and not kwok_stages_path().exists():
        write_kwok_stages(KWOK_VERSION)
    if not all(path.exists() for path in keda_crd_paths()):
        write_keda_crds(KEDA_VERSION)
    if "helm" in missing:
        ldflags = helm_ldflags(HELM_VERSION, _go_mod_of("helm.sh/helm/v3", HELM_VERSION))
        go_install(wanted["helm"], "helm.sh/helm/v3/cmd/helm", ldflags)
    return {binary.name: binary.path for binary in selected}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="binaries to build (default: all)")
    parser.add_argument("--print-bin-dirs", action="store_true", help="print a PATH fragment and exit")
    args = parser.parse_args(argv)
    if args.print_bin_dirs:
        print(":".join(str(binary.path.parent) for binary in binaries().values()))
        return 0
    for name, path in ensure(args.names or None).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
