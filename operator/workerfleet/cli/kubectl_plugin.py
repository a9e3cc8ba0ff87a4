"""`kubectl workerfleet`: watch and steer a WorkerPool's canary rollout.

    kubectl workerfleet status NAME [--watch]   revisions, weights, step, last analysis, progress
    kubectl workerfleet promote NAME [--full]   end the current step now (--full: make the canary stable)
    kubectl workerfleet abort NAME              scale the canary to zero; the pool becomes Degraded
    kubectl workerfleet retry NAME              start a rolled-back or aborted rollout again from step 1
    kubectl workerfleet pause|resume NAME       hold or release the rollout (spec.paused)

promote, abort and retry set the annotation workerfleet.dev/rollout-action to
`<action>/<revision>/<token>`, naming the canary revision running when asked: the operator acts on
each token once, and only on the rollout of that revision (a stale action is dropped with an Event,
never carried over to the next canary). They exit 3 when no rollout they could act on runs.
`status` exits 1 when the pool is Degraded.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from workerfleet.api.base import API_VERSION
from workerfleet.kube.client import Kube
from workerfleet.kube.rest import current_namespace
from workerfleet.planners.rollout import ROLLOUT_ACTION_ANNOTATION, Action, action_value

BAR_WIDTH = 20
WATCH_INTERVAL_SECONDS = 2.0
EXIT_DEGRADED = 1
EXIT_NOT_FOUND = 2
EXIT_NO_ROLLOUT = 3
RUNNING_PHASES = ("Progressing", "Paused")


def progress_bar(weight: int) -> str:
    filled = round(BAR_WIDTH * max(0, min(weight, 100)) / 100)
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + f"] {weight}% canary"


def _rate(value: object) -> str:
    return f"{float(value) * 100:.1f}%" if isinstance(value, int | float) else "-"


def render_status(pool: Mapping[str, Any]) -> str:
    """A readable view of a pool's rollout, from the pool as stored."""
    metadata, spec = pool["metadata"], pool.get("spec") or {}
    status = pool.get("status") or {}
    rollout = status.get("rollout") or {}
    steps = (((spec.get("rollout") or {}).get("canary") or {}).get("steps")) or []
    phase = rollout.get("phase", "Unknown")
    total = status.get("replicas", 0)
    canary_replicas = status.get("canaryReplicas", 0)
    lines = [
        f"WorkerPool {metadata['namespace']}/{metadata['name']}: {phase}"
        + (" (spec.paused)" if spec.get("paused") else ""),
        f"  stable  {status.get('stableRevision', '-'):<12} {total - canary_replicas} replicas",
    ]
    if status.get("canaryRevision"):
        lines.append(f"  canary  {status['canaryRevision']:<12} {canary_replicas} replicas")
        lines.append(
            f"  step    {rollout.get('step', 0)} of {len(steps)}  {progress_bar(rollout.get('weight', 0))}"
        )
        if rollout.get("failedAnalyses"):
            lines.append(f"  failed analyses: {rollout['failedAnalyses']}")
    if rollout.get("message"):
        lines.append(f"  {rollout['message']}")
    last = rollout.get("lastAnalysis")
    if last:
        lines.append(
            f"  last analysis {last.get('time', '')}: {last.get('verdict')}"
            f" (canary {_rate(last.get('canaryErrorRate'))} of {last.get('canarySamples', 0)} jobs,"
            f" stable {_rate(last.get('stableErrorRate'))} of {last.get('stableSamples', 0)} jobs)"
        )
    return "\n".join(lines)


def action_patch(action: Action, revision: str, now: datetime) -> dict[str, Any]:
    token = now.strftime("%Y%m%dT%H%M%S.%fZ")
    return {"metadata": {"annotations": {ROLLOUT_ACTION_ANNOTATION: action_value(action, revision, token)}}}


def action_target(action: Action, pool: Mapping[str, Any]) -> str | None:
    """The canary revision `action` is for, or None when the rollout as stored cannot take it."""
    status = pool.get("status") or {}
    revision = status.get("canaryRevision")
    phase = (status.get("rollout") or {}).get("phase")
    wanted = ("Degraded",) if action == Action.RETRY else RUNNING_PHASES
    return str(revision) if revision and phase in wanted else None


def _get(api: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return api.read(API_VERSION, "WorkerPool", namespace, name)


def show_status(
    args: argparse.Namespace,
    api: Kube,
    write: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    shown = None
    while True:
        pool = _get(api, args.namespace, args.name)
        if pool is None:
            write(f"WorkerPool {args.namespace}/{args.name} not found")
            return EXIT_NOT_FOUND
        view = render_status(pool)
        if view != shown:
            write(view)
            shown = view
        if not args.watch:
            phase = ((pool.get("status") or {}).get("rollout") or {}).get("phase")
            return EXIT_DEGRADED if phase == "Degraded" else 0
        sleep(WATCH_INTERVAL_SECONDS)


def _act(args: argparse.Namespace, api: Kube, write: Callable[[str], None]) -> int:
    pool = _get(api, args.namespace, args.name)
    if pool is None:
        write(f"WorkerPool {args.namespace}/{args.name} not found")
        return EXIT_NOT_FOUND
    full = " --full" if getattr(args, "full", False) else ""
    if args.command in ("pause", "resume"):
        api.patch_pool(args.namespace, args.name, {"spec": {"paused": args.command == "pause"}})
    else:
        action = Action.PROMOTE_FULL if args.command == "promote" and args.full else Action(args.command)
        revision = action_target(action, pool)
        if revision is None:
            wanted = "rolled-back canary" if action == Action.RETRY else "running canary"
            write(
                f"workerpool {args.namespace}/{args.name}: no {wanted},"
                f" so {args.command}{full} has nothing to act on"
            )
            return EXIT_NO_ROLLOUT
        api.patch_pool(args.namespace, args.name, action_patch(action, revision, datetime.now(UTC)))
        full += f" (revision {revision})"
    write(f"workerpool {args.namespace}/{args.name}: {args.command}{full} requested")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl workerfleet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-n", "--namespace", default=None, help="namespace of the pool (default: the context's)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="show the rollout; exits 1 when the pool is Degraded")
    status.add_argument("--watch", "-w", action="store_true", help="keep showing changes until interrupted")
    promote = commands.add_parser("promote", help="end the current step now")
    promote.add_argument(
        "--full", action="store_true", help="skip the remaining steps: make the canary stable"
    )
    commands.add_parser("abort", help="scale the canary to zero; the pool becomes Degraded")
    commands.add_parser("retry", help="start a rolled-back or aborted rollout again")
    commands.add_parser("pause", help="hold the rollout at its step (spec.paused=true)")
    commands.add_parser("resume", help="release a held rollout (spec.paused=false)")
    for sub in commands.choices.values():
        sub.add_argument("name", help="name of the WorkerPool")
        sub.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="namespace of the pool")
    return parser


def main(argv: Sequence[str] | None = None, api: Kube | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.namespace is None:
        args.namespace = current_namespace()
    api = api or Kube()
    try:
        if args.command == "status":
            return show_status(args, api, print)
        return _act(args, api, print)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
