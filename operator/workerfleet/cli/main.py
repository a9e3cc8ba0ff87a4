"""`workerfleet` sub-commands; `workerfleet run` starts the operator against the current kubeconfig."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import kopf

from workerfleet import __version__


def _run(args: argparse.Namespace) -> int:
    import workerfleet.handlers  # noqa: F401, PLC0415  (registers the handlers with kopf)

    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    namespaces = tuple(args.namespace)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=args.standalone,
        liveness_endpoint=args.liveness,
    )
    return 0


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
        help="watch only this namespace (repeatable); default: the whole cluster",
    )
    run.add_argument("--log-format", choices=["json", "text"], default="json")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.add_argument(
        "--standalone",
        action="store_true",
        help="skip peering with other operator replicas (single replica, or local development)",
    )
    run.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    run.set_defaults(handler=_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
