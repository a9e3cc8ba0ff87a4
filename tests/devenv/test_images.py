"""The images built here follow the Dockerfiles: what they install, their ENV, USER and entry point."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from devenv import images
from devenv.images import extra_requirements


@pytest.mark.parametrize(
    ("name", "requirement", "cmd"),
    [("operator", ".[operator]", ("run",)), ("demo-worker", ".", ("worker",))],
)
def test_each_dockerfile_is_read_into_the_recipe_the_image_is_built_from(
    name: str, requirement: str, cmd: tuple[str, ...]
) -> None:
    recipe = images.parse_dockerfile((images.REPOSITORY / images.DOCKERFILES[name]).read_text())

    assert recipe.requirement == requirement
    assert recipe.entrypoint == ("workerfleet",)
    assert recipe.cmd == cmd
    assert recipe.user == "65532:65532"
    assert recipe.env["PATH"] == f"{images.IMAGE_ROOT}/bin:{images.BASE_PATH}"
    assert recipe.env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_the_image_config_carries_the_recipe_and_one_diff_id_per_layer() -> None:
    recipe = images.parse_dockerfile((images.REPOSITORY / images.DOCKERFILES["demo-worker"]).read_text())
    layers = [
        images.Layer(images.REPOSITORY, "sha256:aa", 1),
        images.Layer(images.REPOSITORY, "sha256:bb", 2),
    ]

    config = images.image_config(recipe, layers)

    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:aa", "sha256:bb"]}
    runtime = config["config"]
    assert isinstance(runtime, dict)
    assert runtime["User"] == "65532:65532"
    assert "WORKERFLEET_HANDLERS=workerfleet.worker.demo" in runtime["Env"]
    assert runtime["Entrypoint"] + runtime["Cmd"] == ["workerfleet", "worker"]


def test_a_dockerfile_that_installs_something_else_is_refused_with_what_to_write() -> None:
    text = 'FROM x\nRUN pip install --no-cache-dir requests\nENTRYPOINT ["x"]\n'

    with pytest.raises(images.ImageBuildError, match=r"pip install --no-cache-dir \."):
        images.parse_dockerfile(text)


def test_the_image_download_names_what_the_extras_add(tmp_path: Path) -> None:
    wheel = tmp_path / "workerfleet-0.1.0-py3-none-any.whl"
    metadata = "\n".join(
        [
            "Metadata-Version: 2.1",
            "Name: workerfleet",
            "Requires-Dist: redis>=5",
            'Requires-Dist: kopf>=1.44; extra == "operator"',
            'Requires-Dist: croniter==7.0.0; extra == "operator"',
            'Requires-Dist: pytest; extra == "dev"',
            "",
            "Requires-Dist: in-the-description; extra == 'operator'",
        ]
    )
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("workerfleet-0.1.0.dist-info/METADATA", metadata)
    assert extra_requirements(wheel, ".[operator]") == ["kopf>=1.44", "croniter==7.0.0"]
    assert extra_requirements(wheel, ".") == []
