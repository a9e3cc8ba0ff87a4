"""What each install set weighs: the worker set (pyproject's base dependencies, what a worker image
installs) and the operator set (the `operator` extra on top), and how long the worker takes to start.

Run with `make footprint` (also part of `make bench`). Each set goes into a fresh virtual environment
made without pip, so the size is the set's own; wheels come from a cache outside the repository
(``$WORKERFLEET_CACHE/wheels``), filled from the package index on first use only.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

from devenv.toolchain import cache_root

REPOSITORY = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "operator")
INSTALL_TIMEOUT_SECONDS = 600
STARTS = 9


def wheel_cache() -> Path:
    return cache_root() / "wheels"


def requirements(extras: tuple[str, ...]) -> list[str]:
    """The requirement strings of the base set plus the extras, and what building the project needs."""
    pyproject = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    optional = pyproject["project"]["optional-dependencies"]
    return [
        *pyproject["project"]["dependencies"],
        *(requirement for extra in extras for requirement in optional[extra]),
        *pyproject["build-system"]["requires"],
    ]


def _pip(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *arguments],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
    )


def make_environment(destination: Path, extras: tuple[str, ...] = ()) -> Path:
    """A fresh venv at `destination` with workerfleet (plus `extras`) installed from a copy of the
    repository's sources, offline from the wheel cache (filled first when something is missing).
    Returns the environment's python."""
    source = destination.parent / f"{destination.name}-src"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for name in SOURCES:
        path = REPOSITORY / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, source / name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(destination)], check=True, timeout=120)
    python = destination / "bin" / "python"
    target = f"{source}[{','.join(extras)}]" if extras else str(source)
    cache = wheel_cache()
    cache.mkdir(parents=True, exist_ok=True)
    install = (
        "--python",
        str(python),
        "install",
        "--quiet",
        "--no-index",
        "--find-links",
        str(cache),
        target,
    )
    result = _pip(*install)
    if result.returncode != 0:
        fill = _pip("download", "--quiet", "--only-binary", ":all:", "-d", str(cache), *requirements(extras))
        if fill.returncode != 0:
            raise RuntimeError(f"filling the wheel cache failed:\n{fill.stderr}")
        result = _pip(*install)
    if result.returncode != 0:
        raise RuntimeError(f"installing {target} failed:\n{result.stderr}")
    shutil.rmtree(source)
    return python


def site_packages_bytes(python: Path) -> int:
    """Bytes on disk under the environment's site-packages (bytecode pip wrote included)."""
    (site,) = (python.parent.parent / "lib").glob("python3.*/site-packages")
    return sum(path.stat().st_size for path in site.rglob("*") if path.is_file() and not path.is_symlink())


def start_seconds(command: list[str], starts: int = STARTS) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of `command` (e.g. `workerfleet worker
    --help`) over `starts` runs, the first (which writes bytecode) not counted. CPU time is what to
    compare on a shared machine: it does not grow while other processes hold the cores."""
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    walls, cpus = [], []
    for _ in range(starts):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        walls.append(time.perf_counter() - began)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=cache_root() / "footprint")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"{'set':<32} {'installed':>9} {'worker --help':>22} {'import worker runtime':>22}")
    print(f"{'':<32} {'(MB)':>9} {'wall / CPU (s)':>22} {'wall / CPU (s)':>22}")
    for label, extras in (("worker: workerfleet", ()), ("operator: workerfleet[operator]", ("operator",))):
        python = make_environment(args.workdir / (extras[0] if extras else "worker"), extras)
        size = site_packages_bytes(python) / 1e6
        help_wall, help_cpu = start_seconds([str(python.parent / "workerfleet"), "worker", "--help"])
        import_wall, import_cpu = start_seconds([str(python), "-c", "import workerfleet.worker.cli"])
        print(
            f"{label:<32} {size:>9.1f} {f'{help_wall:.2f} / {help_cpu:.2f}':>22}"
            f" {f'{import_wall:.2f} / {import_cpu:.2f}':>22}"
        )
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
