"""The images' build stages, carried out on this host: no container engine runs here.

Each Dockerfile's first stage copies parts of the repository and installs them into a virtual
environment; the runtime stage copies that environment and runs its entry point. This test copies
exactly what the COPY lines name (honouring .dockerignore), runs the RUN line with the image paths
moved under a temporary directory, and runs the ENTRYPOINT and CMD with the image's ENV. What it
cannot check is the base image itself.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
IMAGES = sorted((REPOSITORY / "images").glob("*/Dockerfile"))
IMAGE_ROOT = "/opt/workerfleet"
INSTALL_TIMEOUT_SECONDS = 600


@dataclass
class BuildStage:
    """What the first stage of a Dockerfile does, and what its last stage runs."""

    workdir: str = "/"
    copies: list[tuple[list[str], str]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.startswith("#")))
    return [
        (words[0].upper(), words[1] if len(words) > 1 else "")
        for words in (line.strip().split(None, 1) for line in joined.splitlines() if line.strip())
    ]


def parse(dockerfile: Path) -> BuildStage:
    stage = BuildStage()
    stages = 0
    for instruction, arguments in _instructions(dockerfile.read_text()):
        if instruction == "FROM":
            stages += 1
        elif instruction == "WORKDIR" and stages == 1:
            stage.workdir = arguments
        elif instruction == "COPY" and not arguments.startswith("--from"):
            *sources, destination = arguments.split()
            stage.copies.append((sources, destination))
        elif instruction == "RUN":
            stage.runs.append(arguments)
        elif instruction == "ENV":
            stage.env.update(re.findall(r"(\w+)=(\S+)", arguments))
        elif instruction == "ENTRYPOINT":
            stage.entrypoint = _exec_form(arguments)
        elif instruction == "CMD":
            stage.cmd = _exec_form(arguments)
    return stage


def _exec_form(arguments: str) -> list[str]:
    return re.findall(r'"([^"]*)"', arguments)


def _ignored(relative: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(relative, pattern.removeprefix("**/"))
        or fnmatch.fnmatch(Path(relative).name, pattern.removeprefix("**/"))
        or relative.startswith(pattern.rstrip("/") + "/")
        for pattern in patterns
    )


def copy_context(stage: BuildStage, root: Path) -> Path:
    """The files the COPY lines name, where the image would have them; returns the WORKDIR."""
    patterns = [line for line in (REPOSITORY / ".dockerignore").read_text().splitlines() if line]
    workdir = root / stage.workdir.lstrip("/")
    for sources, destination in stage.copies:
        target = workdir / destination
        for source in sources:
            path = REPOSITORY / source
            if path.is_dir():
                shutil.copytree(
                    path,
                    target,
                    ignore=lambda directory, names: [
                        name
                        for name in names
                        if _ignored(str((Path(directory) / name).relative_to(REPOSITORY)), patterns)
                    ],
                )
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
    return workdir


@pytest.mark.parametrize("dockerfile", IMAGES, ids=[path.parent.name for path in IMAGES])
def test_the_image_builds_and_its_entry_point_runs(dockerfile: Path, tmp_path: Path) -> None:
    # Given the files the build stage copies, and nothing else
    stage = parse(dockerfile)
    assert stage.runs, "the build stage installs something"
    assert stage.entrypoint == ["workerfleet"]
    workdir = copy_context(stage, tmp_path / "image")
    assert not (workdir / "operator" / "__init__.py").exists()
    assert not list(workdir.rglob("__pycache__")), ".dockerignore keeps caches out of the image"

    # When the RUN lines run, with the image's paths moved under the temporary directory
    environment = tmp_path / "opt" / "workerfleet"
    host_python = Path(sys.executable).resolve()
    for run in stage.runs:
        command = run.replace(IMAGE_ROOT, str(environment)).replace(
            "python -m venv", f"{host_python} -m venv"
        )
        subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=workdir,
            check=True,
            timeout=INSTALL_TIMEOUT_SECONDS,
            capture_output=True,
            text=True,
        )

    # Then the entry point answers, with the image's environment, for its default command
    env = {
        "HOME": str(tmp_path),
        **{name: value.replace(IMAGE_ROOT, str(environment)) for name, value in stage.env.items()},
    }
    env["PATH"] = env["PATH"].replace("$PATH", os.environ.get("PATH", "/usr/bin:/bin"))
    binary = environment / "bin" / stage.entrypoint[0]
    result = subprocess.run(
        [str(binary), *stage.entrypoint[1:], *stage.cmd, "--help"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert stage.cmd[0] in result.stdout
    version = subprocess.run(
        [str(binary), "--version"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert version.stdout.startswith("workerfleet ")
    # And a handler module the image names is importable from the installed package alone
    handlers = env.get("WORKERFLEET_HANDLERS")
    if handlers is not None:
        subprocess.run(
            [str(environment / "bin" / "python"), "-c", f"import {handlers}"],
            env=env,
            cwd=tmp_path,
            check=True,
            timeout=60,
        )
