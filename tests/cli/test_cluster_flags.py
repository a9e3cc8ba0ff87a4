"""kubectl's connection flags on `kubectl workerfleet` and `workerfleet enqueue`: spelled and ordered
as in kubectl, unset ones left to the kubeconfig."""

from __future__ import annotations

import pytest

from workerfleet import __version__
from workerfleet.cli import kubectl_plugin
from workerfleet.cli import main as workerfleet
from workerfleet.cli.cluster_flags import cluster_options
from workerfleet.kube.options import ClusterOptions


@pytest.mark.parametrize(
    "argv",
    [
        [
            "--context",
            "prod",
            "--kubeconfig",
            "/k",
            "-n",
            "media",
            "--as",
            "kim",
            "--as-group",
            "ops",
            "status",
            "x",
        ],
        [
            "status",
            "x",
            "--context",
            "prod",
            "--kubeconfig",
            "/k",
            "-n",
            "media",
            "--as",
            "kim",
            "--as-group",
            "ops",
        ],
    ],
)
def test_the_plugin_takes_kubectls_flags_before_or_after_the_command(argv: list[str]) -> None:
    args = kubectl_plugin.build_parser().parse_args(argv)

    assert cluster_options(args, "kubectl-workerfleet") == ClusterOptions(
        kubeconfig="/k",
        context="prod",
        namespace="media",
        impersonate_user="kim",
        impersonate_groups=("ops",),
        component="kubectl-workerfleet",
    )


def test_unset_flags_leave_the_kubeconfig_in_charge() -> None:
    args = kubectl_plugin.build_parser().parse_args(["status", "x"])

    assert cluster_options(args, "kubectl-workerfleet") == ClusterOptions(component="kubectl-workerfleet")


def test_enqueue_takes_the_same_flags() -> None:
    args = workerfleet.build_parser().parse_args(
        ["enqueue", "--pool", "p", "--type", "t", "--data", "{}", "--context", "prod", "--as", "kim"]
    )

    options = cluster_options(args, "enqueue")
    assert (options.context, options.impersonate_user, options.user_agent) == (
        "prod",
        "kim",
        f"workerfleet/{__version__} (enqueue)",
    )


def test_a_group_without_a_user_to_impersonate_is_refused_as_kubectl_does() -> None:
    args = kubectl_plugin.build_parser().parse_args(["--as-group", "ops", "status", "x"])

    with pytest.raises(SystemExit, match="--as-group needs --as"):
        cluster_options(args, "kubectl-workerfleet")
