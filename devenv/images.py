"""The operator and demo worker images, built on this host without a container engine or registry.

Each image is its Dockerfile's runtime stage on another base: a Debian root filesystem with python3
(debootstrap from Debian's packages, cached outside the repository) instead of python:3.12-slim.
From the Dockerfile it takes what the build stage installs (`.` or `.[operator]`), ENV, USER,
ENTRYPOINT and CMD, so one description serves both builds. The project's wheel and its
dependencies go into /opt/workerfleet inside the root filesystem (a chroot on an overlay mount,
whose upper directory is the image's second layer). All images, plus the pause image the node's
pod sandboxes run, land in one OCI archive that shares the base layer.

    python -m devenv.images          # build (base reused when cached); prints the archive's path
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement

from devenv.toolchain import cache_root

REPOSITORY = Path(__file__).resolve().parent.parent
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_ROOT = "/opt/workerfleet"
PAUSE_IMAGE = "workerfleet.local/pause:" + DEBIAN_SUITE
DOCKERFILES = {"operator": "images/operator/Dockerfile", "demo-worker": "images/demo-worker/Dockerfile"}
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
BUILD_TIMEOUT_SECONDS = 600


class ImageBuildError(RuntimeError):
    """A Dockerfile this builder cannot follow, or a step of the build that failed."""


@dataclass(frozen=True)
class Recipe:
    """What a Dockerfile says an image holds and runs."""

    requirement: str
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    joined = re.sub(r"\\\n", " ", lines)
    return [
        (words[0].upper(), words[1] if len(words) > 1 else "")
        for words in (line.strip().split(None, 1) for line in joined.splitlines() if line.strip())
    ]


def parse_dockerfile(text: str) -> Recipe:
    """The install target of the build stage and the runtime stage's ENV, USER, ENTRYPOINT, CMD."""
    requirement = ""
    env: dict[str, str] = {}
    user = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    for instruction, arguments in _instructions(text):
        if instruction == "RUN":
            installs = re.findall(r"pip install --no-cache-dir (\S+)\s*(?:&&|$)", arguments)
            requirement = installs[-1].strip("'\"") if installs else requirement
        elif instruction == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", arguments):
                env[key] = value.replace("$PATH", env.get("PATH", BASE_PATH))
        elif instruction == "USER":
            user = arguments.strip()
        elif instruction == "ENTRYPOINT":
            entrypoint = tuple(json.loads(arguments))
        elif instruction == "CMD":
            cmd = tuple(json.loads(arguments))
    if not requirement.startswith("."):
        raise ImageBuildError("the build stage must `pip install --no-cache-dir .` (or '.[extras]')")
    if not entrypoint:
        raise ImageBuildError("the runtime stage must set ENTRYPOINT in exec form")
    return Recipe(requirement=requirement, env=env, user=user, entrypoint=entrypoint, cmd=cmd)


def image_reference(name: str) -> str:
    """The name containerd stores an image under: the chart's `workerfleet/<name>:<appVersion>`."""
    version = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]["version"]
    return f"docker.io/workerfleet/{name}:{version}"


def _run(args: list[str], **kwargs: object) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True, timeout=BUILD_TIMEOUT_SECONDS, **kwargs)  # type: ignore[call-overload]


def base_rootfs() -> Path:
    """Debian minbase with python3, built once per suite and reused from the cache."""
    root = cache_root() / "rootfs" / f"debian-{DEBIAN_SUITE}-python3"
    if (root / "etc" / "os-release").exists() and not root.with_suffix(".partial").exists():
        return root
    partial = root.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for stale in (root.with_suffix(".tar"), root.with_suffix(".digest")):
        stale.unlink(missing_ok=True)
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            DEBIAN_SUITE,
            str(partial),
            DEBIAN_MIRROR,
        ]
    )
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (partial / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return root


@dataclass(frozen=True)
class Layer:
    path: Path
    digest: str
    size: int


def _tar_layer(directory: Path, output: Path) -> Layer:
    """An uncompressed, reproducible layer tar of `directory` (its digest is its diff_id too)."""
    partial = output.with_suffix(".partial")
    _run(
        [
            "tar",
            "--sort=name",
            "--numeric-owner",
            "--mtime=@0",
            "--xattrs",
            "-C",
            str(directory),
            "-cf",
            str(partial),
            ".",
        ]
    )
    digest = hashlib.sha256()
    with partial.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    partial.replace(output)
    return Layer(output, f"sha256:{digest.hexdigest()}", output.stat().st_size)


def base_layer() -> Layer:
    rootfs = base_rootfs()
    output = rootfs.with_suffix(".tar")
    digest_file = rootfs.with_suffix(".digest")
    if output.exists() and digest_file.exists():
        return Layer(output, digest_file.read_text().strip(), output.stat().st_size)
    layer = _tar_layer(rootfs, output)
    digest_file.write_text(layer.digest)
    return layer


def project_wheel(directory: Path) -> Path:
    """The project's wheel, built from this checkout (build requirements from the wheel cache first)."""
    shutil.rmtree(directory, ignore_errors=True)
    build = [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--quiet", "--no-deps"]
    build += ["--find-links", str(wheel_cache()), "--wheel-dir", str(directory)]
    _offline_first([*build, str(REPOSITORY)])
    [wheel] = directory.glob("workerfleet-*.whl")
    return wheel


def wheel_cache() -> Path:
    return cache_root() / "wheels"


def _ca_bundle() -> Path:
    return Path(os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().openssl_cafile)


def _offline_first(command: list[str], env: dict[str, str] | None = None) -> None:
    """Run a pip command from the wheel cache alone; only when that fails, with the package index."""
    offline = subprocess.run([*command, "--no-index"], check=False, capture_output=True, env=env)
    if offline.returncode != 0:
        _run(command, env=env)


def extra_requirements(wheel: Path, requirement: str) -> list[str]:
    """What the extras of `requirement` (`.[operator]`) add to the wheel's dependencies, their `extra`
    marker evaluated here. Debian's pip does not follow a local wheel's extras in `pip download`, so
    the image's download names them itself."""
    extras = re.findall(r"[\w-]+", requirement.partition("[")[2])
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode().partition("\n\n")[0].splitlines()
    added = []
    for line in lines:
        if not line.startswith("Requires-Dist: "):
            continue
        dependency = Requirement(line.removeprefix("Requires-Dist: "))
        marker = dependency.marker
        if (
            marker is not None
            and "extra" in str(marker)
            and any(marker.evaluate({"extra": e}) for e in extras)
        ):
            dependency.marker = None
            added.append(str(dependency))
    return added


@contextlib.contextmanager
def _overlay(lower: Path, work: Path) -> Iterator[Path]:
    """The merged view of an overlay on `lower`: what is written there lands in `work/upper` alone."""
    upper, scratch, merged = work / "upper", work / "scratch", work / "merged"
    for directory in (upper, scratch, merged):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    options = f"lowerdir={lower},upperdir={upper},workdir={scratch}"
    _run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)])
    try:
        yield merged
    finally:
        _run(["umount", str(merged)])
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _mounted(args: list[str], target: Path) -> Iterator[Path]:
    if not target.exists():
        target.mkdir(parents=True)
    _run(["mount", *args, str(target)])
    try:
        yield target
    finally:
        _run(["umount", str(target)])


def application_layer(name: str, recipe: Recipe, work: Path) -> Layer:
    """/opt/workerfleet with the project (and the recipe's extras) installed, as a layer.

    pip runs inside the root filesystem, so dependency markers are those of the image's Python;
    the wheel cache is bind-mounted, so what it downloads is reused by the next build.
    """
    wheel = project_wheel(work / "project")
    wheel_cache().mkdir(parents=True, exist_ok=True)
    base = base_rootfs()
    # Nothing of this host's environment (its pip settings) leaks into the image's build.
    clean = {"PATH": BASE_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    target = f"/tmp/project/{wheel.name}{recipe.requirement.removeprefix('.')}"
    pip = ["chroot", "{root}", f"{IMAGE_ROOT}/bin/pip", "--disable-pip-version-check"]
    upper = work / name / "upper"
    with contextlib.ExitStack() as mounts:
        merged = mounts.enter_context(_overlay(base, work / name))
        mounts.enter_context(_mounted(["--bind", str(wheel_cache())], merged / "tmp" / "wheels"))
        mounts.enter_context(_mounted(["--bind", "-o", "ro", str(wheel.parent)], merged / "tmp" / "project"))
        # The base has no CA certificates: a download from the index trusts this host's bundle.
        (merged / "tmp" / "ca.crt").touch()
        mounts.enter_context(_mounted(["--bind", "-o", "ro", str(_ca_bundle())], merged / "tmp" / "ca.crt"))
        in_root = [str(merged) if word == "{root}" else word for word in pip]
        _run(["chroot", str(merged), "python3", "-m", "venv", IMAGE_ROOT], env=clean)
        install = [
            *in_root,
            "install",
            "--quiet",
            "--no-cache-dir",
            "--no-index",
            "--find-links",
            "/tmp/wheels",
        ]
        # From the wheel cache alone when it holds everything; Debian's pip can report an offline
        # `download` done while a pinned extra is missing, so the install itself is the test.
        if subprocess.run([*install, target], check=False, capture_output=True, env=clean).returncode != 0:
            download = [
                *in_root,
                "download",
                "--quiet",
                "--dest",
                "/tmp/wheels",
                "--find-links",
                "/tmp/wheels",
            ]
            wanted = [target, *extra_requirements(wheel, recipe.requirement)]
            _run([*download, "--only-binary=:all:", *wanted], env={**clean, "PIP_CERT": "/tmp/ca.crt"})
            _run([*install, target], env=clean)
    shutil.rmtree(upper / "tmp", ignore_errors=True)
    shutil.rmtree(upper / "root", ignore_errors=True)
    layer = _tar_layer(upper, work / f"{name}.layer.tar")
    shutil.rmtree(work / name, ignore_errors=True)
    return layer


def _blob(layout: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    _add_bytes(layout, f"blobs/sha256/{digest.removeprefix('sha256:')}", data)
    return digest, len(data)


def _add_bytes(layout: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    layout.addfile(info, io.BytesIO(data))


def image_config(recipe: Recipe, layers: list[Layer]) -> dict[str, object]:
    env = {"PATH": BASE_PATH, **recipe.env}
    config: dict[str, object] = {
        "Env": [f"{key}={value}" for key, value in env.items()],
        "Entrypoint": list(recipe.entrypoint),
        "Cmd": list(recipe.cmd),
        "WorkingDir": "/",
    }
    if recipe.user:
        config["User"] = recipe.user
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
    }


def write_archive(output: Path, images: dict[str, tuple[Recipe, list[Layer]]]) -> None:
    """One OCI image layout as a tar: every image's manifest in index.json, each blob once."""
    partial = output.with_suffix(".partial")
    manifests = []
    written: set[str] = set()
    with tarfile.open(partial, "w") as layout:
        _add_bytes(layout, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        for reference, (recipe, layers) in images.items():
            for layer in layers:
                if layer.digest not in written:
                    layout.add(layer.path, arcname=f"blobs/sha256/{layer.digest.removeprefix('sha256:')}")
                    written.add(layer.digest)
            config_digest, config_size = _blob(layout, json.dumps(image_config(recipe, layers)).encode())
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": config_size,
                },
                "layers": [
                    {"mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest, "size": layer.size}
                    for layer in layers
                ],
            }
            manifest_digest, manifest_size = _blob(layout, json.dumps(manifest).encode())
            manifests.append(
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": reference,
                        "org.opencontainers.image.ref.name": reference,
                    },
                }
            )
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
        _add_bytes(layout, "index.json", json.dumps({**index, "manifests": manifests}).encode())
    partial.replace(output)


def archive_path() -> Path:
    return REPOSITORY / "build" / "images" / "workerfleet-images.oci.tar"


def build() -> Path:
    """Build every image into one OCI archive; returns its path."""
    work = archive_path().parent
    work.mkdir(parents=True, exist_ok=True)
    base = base_layer()
    images: dict[str, tuple[Recipe, list[Layer]]] = {
        PAUSE_IMAGE: (Recipe(requirement=".", entrypoint=("/bin/sleep", "infinity")), [base]),
    }
    for name, dockerfile in DOCKERFILES.items():
        recipe = parse_dockerfile((REPOSITORY / dockerfile).read_text())
        images[image_reference(name)] = (recipe, [base, application_layer(name, recipe, work)])
    write_archive(archive_path(), images)
    for name in DOCKERFILES:
        (work / f"{name}.layer.tar").unlink(missing_ok=True)
    return archive_path()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args(argv)
    print(build())
    return 0


if __name__ == "__main__":
    sys.exit(main())
