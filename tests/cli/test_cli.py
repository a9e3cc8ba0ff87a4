from __future__ import annotations

import pytest

from workerfleet import __version__
from workerfleet.cli.main import build_parser, main
from workerfleet.cli.peering import PRIORITY_RANGE, default_identity, random_priority


def test_run_defaults_to_the_whole_cluster_with_json_logs() -> None:
    args = build_parser().parse_args(["run"])
    assert args.namespace == []
    assert args.log_format == "json"
    assert args.standalone is False


def test_run_accepts_several_namespaces() -> None:
    args = build_parser().parse_args(["run", "-n", "media", "--namespace", "batch"])
    assert args.namespace == ["media", "batch"]


@pytest.mark.parametrize("pattern", ["team-*", "!kube-system", "media,batch", "Media", "media_jobs"])
def test_run_names_each_namespace_exactly(pattern: str, capsys: pytest.CaptureFixture[str]) -> None:
    # kopf would read a pattern as one and need the cluster's namespace list to resolve it
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", "--namespace", pattern])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--namespace" in error
    assert f"{pattern!r} is not a namespace name" in error
    assert "name each namespace exactly" in error


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


def test_run_peers_by_default_with_a_random_priority_and_a_30_s_lifetime() -> None:
    args = build_parser().parse_args(["run"])
    assert args.peering == "workerfleet"
    assert args.priority is None
    assert args.peering_lifetime == 30
    assert args.label_active_pod is False


def test_run_takes_peering_options() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--peering=fleet",
            "--priority=7",
            "--peering-lifetime=10",
            "--identity=x",
            "--label-active-pod",
        ]
    )
    assert (args.peering, args.priority, args.peering_lifetime, args.identity) == ("fleet", 7, 10, "x")
    assert args.label_active_pod is True


def test_a_peering_lifetime_under_5_s_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--peering-lifetime=2"])
    assert "at least 5 seconds" in capsys.readouterr().err


def test_random_priorities_are_positive_and_spread() -> None:
    priorities = {random_priority() for _ in range(1000)}
    assert len(priorities) == 1000
    assert min(priorities) >= 1
    assert max(priorities) <= PRIORITY_RANGE


def test_the_identity_is_the_pod_name_in_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "workerfleet-5f7-abcde")
    assert default_identity() == "workerfleet-5f7-abcde"
    monkeypatch.delenv("POD_NAME")
    assert default_identity() != default_identity()


def test_run_limits_its_request_rate_by_default_and_on_request() -> None:
    defaults = build_parser().parse_args(["run"])
    assert (defaults.api_qps, defaults.api_burst) == (100.0, 200)
    tuned = build_parser().parse_args(["run", "--api-qps", "20.5", "--api-burst", "40"])
    assert (tuned.api_qps, tuned.api_burst) == (20.5, 40)


@pytest.mark.parametrize(("flag", "value"), [("--api-qps", "0"), ("--api-burst", "0"), ("--api-qps", "-3")])
def test_a_request_rate_that_admits_nothing_is_refused(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", flag, value])
    assert f"argument {flag}: must be" in capsys.readouterr().err


def test_run_resyncs_every_five_minutes_by_default_and_on_request() -> None:
    assert build_parser().parse_args(["run"]).resync_period == 300.0
    assert build_parser().parse_args(["run", "--resync-period=5"]).resync_period == 5.0


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_resync_period_that_never_comes_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", f"--resync-period={value}"])
    assert "argument --resync-period: must be" in capsys.readouterr().err


def test_nothing_is_delegable_unless_the_chart_says_so() -> None:
    assert build_parser().parse_args(["run"]).delegable_permissions == []
    rule = '[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]'
    [parsed] = build_parser().parse_args(["run", f"--delegable-permissions={rule}"]).delegable_permissions
    assert (parsed.api_groups, parsed.resources, parsed.verbs) == ([""], ["configmaps"], ["get"])


@pytest.mark.parametrize("value", ["not json", '[{"resources": ["configmaps"]}]', '{"verbs": "get"}'])
def test_a_delegable_set_that_is_not_a_list_of_rules_is_refused(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", f"--delegable-permissions={value}"])
    assert "argument --delegable-permissions: a JSON list of RBAC rules" in capsys.readouterr().err


def test_the_operator_will_not_start_without_naming_its_admission_policies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--standalone"]) == 2
    error = capsys.readouterr().err
    assert "--admission-policy" in error
    assert "--no-admission-policy" in error


def test_admission_policies_and_serving_unchecked_exclude_each_other(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["run", "--admission-policy=a", "--admission-policy=b"])
    assert args.admission_policy == ["a", "b"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--admission-policy=a", "--no-admission-policy"])
    assert "not allowed with" in capsys.readouterr().err
