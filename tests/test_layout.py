"""The source folder is named `operator`, which must never become a package of its own."""

from __future__ import annotations

import operator
from pathlib import Path

import workerfleet

REPOSITORY = Path(__file__).resolve().parent.parent


def test_operator_folder_is_not_a_package() -> None:
    # A package named `operator` would shadow the standard library's module of that name.
    assert not (REPOSITORY / "operator" / "__init__.py").exists()


def test_standard_library_operator_is_not_shadowed() -> None:
    assert operator.itemgetter(1)([0, 1]) == 1
    assert Path(operator.__file__ or "").parent != REPOSITORY / "operator"


def test_workerfleet_is_imported_from_the_source_folder() -> None:
    assert Path(workerfleet.__file__ or "").parent == REPOSITORY / "operator" / "workerfleet"
