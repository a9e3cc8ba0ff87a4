"""kubectl's connection flags, for every command that talks to the cluster."""

from __future__ import annotations

import argparse

from workerfleet.kube.options import ClusterOptions


def add_cluster_arguments(
    parser: argparse.ArgumentParser, *, namespace_help: str, repeated: bool = False
) -> None:
    """--kubeconfig, --context, -n/--namespace, --as, --as-group, as kubectl spells them. `repeated`:
    on a sub-command too, so they may come before or after it (the sub-command's leave unset alone)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if repeated else value

    parser.add_argument(
        "--kubeconfig", default=default(None), help="the kubeconfig file (default: $KUBECONFIG)"
    )
    parser.add_argument(
        "--context", default=default(None), help="the kubeconfig context (default: its current)"
    )
    parser.add_argument("-n", "--namespace", default=default(None), help=namespace_help)
    parser.add_argument(
        "--as", dest="impersonate_user", default=default(None), metavar="USER", help="impersonate USER"
    )
    parser.add_argument(
        "--as-group",
        dest="impersonate_groups",
        action="append",
        default=default([]),
        metavar="GROUP",
        help="impersonate GROUP too (repeatable; needs --as)",
    )


def cluster_options(args: argparse.Namespace, component: str) -> ClusterOptions:
    """The flags as given; unset ones are the kubeconfig's (kubectl's precedence)."""
    if args.impersonate_groups and not args.impersonate_user:
        raise SystemExit("error: --as-group needs --as: the user whose groups are impersonated")
    return ClusterOptions(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        impersonate_user=args.impersonate_user,
        impersonate_groups=tuple(args.impersonate_groups),
        component=component,
    )
