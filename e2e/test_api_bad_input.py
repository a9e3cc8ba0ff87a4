"""The real API server refuses every manifest of the bad-input corpus, naming the field and the reason,
and creates nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.cluster import Cluster

CORPUS = Path(__file__).resolve().parent / "bad_input" / "corpus.yaml"

# The CRDs are cluster-wide: the session fixture `crds` installs them once and leaves them in place.
pytestmark = pytest.mark.usefixtures("crds")


@dataclass(frozen=True)
class Case:
    """One invalid manifest and what the API server must answer."""

    name: str
    kind: str
    manifest: dict[str, Any]
    field: str
    message: str
    decoding: bool

    @property
    def expected_error(self) -> str:
        """The text stderr must contain: kubectl's strict decoding words unknown fields differently."""
        if self.decoding:
            return f'{self.message} "{self.field}"'
        return f"{self.field}: {self.message}"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: null removes a key, objects merge, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def load_corpus() -> tuple[dict[str, dict[str, Any]], list[Case]]:
    """The valid bases, and every case as the manifest the test applies."""
    corpus = yaml.safe_load(CORPUS.read_text())
    bases: dict[str, dict[str, Any]] = corpus["bases"]
    cases = [
        Case(
            name=entry["name"],
            kind=entry["kind"],
            manifest=merge_patch(bases[entry["kind"]], entry["patch"]),
            field=entry["field"],
            message=entry["message"],
            decoding=entry.get("decoding", False),
        )
        for entry in corpus["cases"]
    ]
    return bases, cases


BASES, CASES = load_corpus()


def _workerfleet_objects(cluster: Cluster, namespace: str) -> list[str]:
    listed = cluster.kubectl("get", "jobtypes,workerpools", "-n", namespace, "-o", "name")
    return listed.stdout.split()


@pytest.mark.parametrize("kind", sorted(BASES))
def test_bases_of_the_corpus_are_accepted(cluster: Cluster, namespace: str, kind: str) -> None:
    # Every case differs from its base by its patch alone, so the base must be valid.
    result = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input_text=json.dumps(BASES[kind]),
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_api_server_refuses_bad_input(cluster: Cluster, namespace: str, case: Case) -> None:
    result = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input_text=json.dumps(case.manifest), check=False
    )

    assert result.returncode != 0, f"{case.name} was accepted: {result.stdout}"
    assert case.expected_error in result.stderr, f"expected {case.expected_error!r} in:\n{result.stderr}"
    assert _workerfleet_objects(cluster, namespace) == []
