"""`workerfleet` sub-commands; `workerfleet run` starts the operator against the current kubeconfig."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence

from workerfleet import __version__
from workerfleet.cli import enqueue as enqueue_cli
from workerfleet.kube.rate_limit import DEFAULT_BURST, DEFAULT_QPS
from workerfleet.planners.permissions import DEFAULT_QUEUE_CREDENTIALS_ROLE, DelegableRule
from workerfleet.planners.resync import DEFAULT_RESYNC_SECONDS
from workerfleet.worker import cli as worker_cli

OPERATOR_DEPENDENCIES = frozenset({"kopf", "aiohttp", "urllib3", "cryptography", "kubernetes"})
"""Modules of the `operator` extra: a worker image has none of them."""


def _run(args: argparse.Namespace) -> int:
    try:
        from workerfleet.cli import operator  # noqa: PLC0415  (the operator's dependencies, on demand)
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] not in OPERATOR_DEPENDENCIES:
            raise
        print(
            f"error: the operator needs workerfleet's operator dependencies ({error}); "
            "install them with: pip install 'workerfleet[operator]'",
            file=sys.stderr,
        )
        return 2
    return operator.run(args)


MIN_LIFETIME_SECONDS = 5


def _lifetime(value: str) -> int:
    seconds = int(value)
    if seconds < MIN_LIFETIME_SECONDS:
        raise argparse.ArgumentTypeError(f"at least {MIN_LIFETIME_SECONDS} seconds")
    return seconds


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return number


def _delegable(value: str) -> list[DelegableRule]:
    try:
        return [DelegableRule.model_validate(rule) for rule in json.loads(value)]
    except (ValueError, TypeError) as error:
        raise argparse.ArgumentTypeError(f"a JSON list of RBAC rules: {error}") from error


NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _namespace_name(value: str) -> str:
    """A namespace's exact name: the operator serves exactly the namespaces named, so kopf never needs
    the cluster's namespace list (which a namespace-bound operator may not read)."""
    if not NAMESPACE_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a namespace name (lowercase letters, digits and '-', at most 63): "
            "name each namespace exactly, patterns are not supported"
        )
    return value


def _namespaced_name(value: str) -> tuple[str, str]:
    namespace, _, name = value.partition("/")
    if not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError("NAMESPACE/NAME")
    return namespace, name


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workerfleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"workerfleet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        type=_namespace_name,
        help="watch only this namespace (repeatable); default: the whole cluster",
    )
    run.add_argument("--log-format", choices=["json", "text"], default="json")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.add_argument(
        "--standalone",
        action="store_true",
        help="no peering: act alone (local development, tests); never with other replicas running",
    )
    run.add_argument(
        "--peering",
        default="workerfleet",
        metavar="NAME",
        help="the ClusterKopfPeering (cluster-wide) or KopfPeering (in each watched namespace) where "
        "replicas announce themselves; the one with the highest priority acts (default: workerfleet)",
    )
    run.add_argument(
        "--priority",
        type=int,
        default=None,
        help="this replica's peering priority; default: random, so no two replicas share one",
    )
    run.add_argument(
        "--peering-lifetime",
        type=_lifetime,
        default=30,
        metavar="SECONDS",
        help="how long a replica that stopped refreshing its peering record still counts: the "
        "bound on failover after a crash (default 30)",
    )
    run.add_argument(
        "--identity",
        default=None,
        help="this replica's name in the peering object; default: $POD_NAME, else host/pid/random",
    )
    run.add_argument(
        "--label-active-pod",
        action="store_true",
        help="label this replica's pod ($POD_NAMESPACE/$POD_NAME) workerfleet.dev/active=true while "
        "it is the active one, so the metrics API Service routes to it alone",
    )
    run.add_argument(
        "--active-pod-selector",
        default=None,
        metavar="SELECTOR",
        help="with --label-active-pod: label selector of all the operator's pods (e.g. "
        "app.kubernetes.io/instance=workerfleet); on turning active, the replica takes the label off "
        "every other pod it selects in $POD_NAMESPACE, which a killed replica cannot do itself",
    )
    run.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument(
        "--metrics-api-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve external.metrics.k8s.io (queue depth for HPAs) on this port; 0 turns it off",
    )
    run.add_argument("--metrics-api-address", default="0.0.0.0", metavar="ADDRESS")  # noqa: S104
    run.add_argument("--metrics-api-cert", default=None, metavar="FILE", help="serving certificate (PEM)")
    run.add_argument(
        "--metrics-api-key",
        default=None,
        metavar="FILE",
        help="its key; without cert and key a self-signed certificate is made at start",
    )
    run.add_argument(
        "--metrics-api-service",
        action="append",
        default=[],
        metavar="DNS_NAME",
        help="the Service name the self-signed certificate is made for (repeatable)",
    )
    run.add_argument(
        "--register-metrics-api",
        type=_namespaced_name,
        default=None,
        metavar="NAMESPACE/SERVICE",
        help="register the v1beta1.external.metrics.k8s.io APIService, routed to this Service, while this "
        "replica is the active one, and remove it when the last replica stops gracefully (a registered "
        "API that nothing answers stalls namespace deletion and garbage collection cluster-wide)",
    )
    run.add_argument(
        "--metrics-api-service-port",
        type=_positive_int,
        default=443,
        metavar="PORT",
        help="with --register-metrics-api: the Service port the APIService names (default 443)",
    )
    run.add_argument(
        "--metrics-api-ca-file",
        default=None,
        metavar="FILE",
        help="with --register-metrics-api: the CA (PEM) the APIService trusts, read again while active; "
        "default: the serving certificate itself",
    )
    run.add_argument(
        "--metrics-api-owner-cluster-role",
        default=None,
        metavar="NAME",
        help="with --register-metrics-api: the release's ClusterRole, named as the APIService's owner so "
        "that the garbage collector removes it when the release is uninstalled",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve the operator's Prometheus metrics (queue depth, pool conditions) on this port; 0: off",
    )
    # Loopback unless asked: the metrics name every pool and its queue, so not for every namespace.
    run.add_argument("--metrics-address", default="127.0.0.1", metavar="ADDRESS")
    run.add_argument(
        "--api-qps",
        type=_positive_float,
        default=DEFAULT_QPS,
        metavar="N",
        help=f"requests per second to the API server, on average (default {DEFAULT_QPS:g}): however "
        "many pools change at once, the operator never sends more",
    )
    run.add_argument(
        "--api-burst",
        type=_positive_int,
        default=DEFAULT_BURST,
        metavar="N",
        help=f"requests that may go at once above --api-qps (default {DEFAULT_BURST})",
    )
    run.add_argument(
        "--resync-period",
        type=_positive_float,
        default=DEFAULT_RESYNC_SECONDS,
        metavar="SECONDS",
        help=f"reconcile every pool at least this often, reading every child (default "
        f"{DEFAULT_RESYNC_SECONDS:g}): a hand edit of a child is put back within one period",
    )
    run.add_argument(
        "--delegable-permissions",
        type=_delegable,
        default=[],
        metavar="JSON",
        help="the RBAC rules (a JSON list) JobTypes may grant workers; a pool whose JobType asks for more "
        "is refused (Ready=False, PermissionNotDelegable) before any Role is written (default: none)",
    )
    run.add_argument(
        "--queue-credentials-role",
        default=DEFAULT_QUEUE_CREDENTIALS_ROLE,
        metavar="NAME",
        help="the ClusterRole a namespace admin binds to let the operator read queue credentials there",
    )
    run.add_argument(
        "--allow-queue-address",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a queue address pools may name (repeatable; *.domain allowed); default: any",
    )
    run.add_argument(
        "--allow-prometheus",
        action="append",
        default=[],
        metavar="URL",
        help="a Prometheus base URL pools may name (repeatable); default: any",
    )
    admission = run.add_mutually_exclusive_group()
    admission.add_argument(
        "--admission-policy",
        action="append",
        default=[],
        metavar="NAME",
        help="a ValidatingAdmissionPolicy (with a binding of the same name) that must be in force before"
        " any pool is served (repeatable; the chart names its own); one of this or --no-admission-policy",
    )
    admission.add_argument(
        "--no-admission-policy",
        action="store_true",
        help="serve pools without checking that their authors hold what they name: development only",
    )
    run.set_defaults(handler=_run)

    worker = commands.add_parser(
        "worker",
        help="consume the pool's jobs (the entry point of worker containers; see workerfleet.worker)",
    )
    worker_cli.add_arguments(worker)
    worker.set_defaults(handler=worker_cli.run)

    enqueue = commands.add_parser(
        "enqueue", help="put one job on a pool's queue, checked against its JobType first"
    )
    enqueue_cli.add_arguments(enqueue)
    enqueue.set_defaults(handler=enqueue_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
