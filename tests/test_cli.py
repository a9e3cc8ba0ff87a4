from __future__ import annotations

import pytest

from workerfleet import __version__
from workerfleet.cli.main import build_parser, main


def test_run_defaults_to_the_whole_cluster_with_json_logs() -> None:
    args = build_parser().parse_args(["run"])
    assert args.namespace == []
    assert args.log_format == "json"
    assert args.standalone is False


def test_run_accepts_several_namespaces() -> None:
    args = build_parser().parse_args(["run", "-n", "media", "--namespace", "batch"])
    assert args.namespace == ["media", "batch"]


def test_a_sub_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "required: command" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"workerfleet {__version__}"


def test_run_takes_the_metrics_port_and_the_metrics_api_service_name() -> None:
    args = build_parser().parse_args(
        ["run", "--metrics-port=9090", "--metrics-api-service=wf-metrics-api.workerfleet-system.svc"]
    )
    assert args.metrics_port == 9090
    assert args.metrics_api_service == ["wf-metrics-api.workerfleet-system.svc"]
