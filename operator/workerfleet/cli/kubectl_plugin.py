"""`kubectl workerfleet`: watch and steer a WorkerPool's canary rollout, its review inbox and its dead
letters (`review` and `dlq`: see `workerfleet.cli.triage_commands`).

    kubectl workerfleet status NAME [--watch]   revisions, step i of n, weight, time left in the pause,
                                                last analysis against its thresholds, the JobTypes
                                                served with their priority
    kubectl workerfleet promote NAME [--full]   end the current step now (--full: make the canary stable)
    kubectl workerfleet abort NAME              scale the canary to zero; the pool becomes Degraded
    kubectl workerfleet retry NAME              start a rolled-back or aborted rollout again from step 1
    kubectl workerfleet pause|resume NAME       hold or release the rollout (spec.paused)
    kubectl workerfleet breaker reset|open NAME close the circuit breaker now, or open it and hold it
                                                open until reset (annotation workerfleet.dev/breaker-action)

promote, abort and retry set the annotation workerfleet.dev/rollout-action to
`<action>/<revision>/<token>`, naming the canary revision running when asked: the operator acts on
each token once, and only on the rollout of that revision (a stale action is dropped with an Event,
never carried over to the next canary). They exit 3 when no rollout they could act on runs.
`status` exits 1 when the pool is Degraded; every command exits 4 when the cluster cannot be reached
or refuses the request (the message says why). kubectl's --kubeconfig, --context, -n, --as and
--as-group select the cluster and identity, with kubectl's precedence. `--watch` redraws in place
on a terminal and prints the view again, as plain lines, each time the pool changes when the output
is piped.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from workerfleet.api.base import API_VERSION
from workerfleet.api.workerpool import RolloutPhase, WorkerPoolConditionType
from workerfleet.cli import triage_commands
from workerfleet.cli.cluster_flags import add_cluster_arguments, cluster_options
from workerfleet.kube.client import Kube
from workerfleet.kube.credentials import ConfigError, current_namespace
from workerfleet.kube.rest import ApiError, Rest
from workerfleet.planners.breaker import BREAKER_ACTION_ANNOTATION, BreakerAction
from workerfleet.planners.rollout import ROLLOUT_ACTION_ANNOTATION, Action, action_value

BAR_WIDTH = 20
WATCH_INTERVAL_SECONDS = 2.0
EXIT_DEGRADED = 1
EXIT_NOT_FOUND = 2
EXIT_NO_ROLLOUT = 3
RUNNING_PHASES = (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED)


def progress_bar(weight: int) -> str:
    filled = round(BAR_WIDTH * max(0, min(weight, 100)) / 100)
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + f"] {weight}% canary"


def _rate(value: object) -> str:
    return f"{float(value) * 100:.1f}%" if isinstance(value, int | float) else "-"


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def pause_left(step: Mapping[str, Any], rollout: Mapping[str, Any], now: datetime) -> str:
    """Where the current step's pause stands: its clock starts when the canary workers are ready."""
    if rollout.get("phase") not in RUNNING_PHASES:
        return ""
    if step.get("pauseSeconds") is None:
        return "held until promoted"
    started = _timestamp(rollout.get("stepStartedAt"))
    if started is None:
        return "waiting for the canary workers to be ready"
    left = (started - now).total_seconds() + int(step["pauseSeconds"])
    return f"pause {_duration(left)} left" if left > 0 else "pause over, next step due"


def _thresholds(analysis: Mapping[str, Any]) -> str:
    parts = []
    if analysis.get("maxErrorRate") is not None:
        parts.append(f"canary at most {_rate(analysis['maxErrorRate'])}")
    if analysis.get("maxIncreaseOverStable") is not None:
        parts.append(f"at most {float(analysis['maxIncreaseOverStable']) * 100:.1f} points over stable")
    parts.append(f"{analysis.get('minSamples', 100)} jobs before a verdict")
    return "thresholds: " + ", ".join(parts)


def degraded(pool: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pool's Degraded condition when it holds (a rolled-back canary, a JobType it cannot serve)."""
    for condition in (pool.get("status") or {}).get("conditions") or []:
        if condition.get("type") == WorkerPoolConditionType.DEGRADED and condition.get("status") == "True":
            return dict(condition)
    return None


def job_types_line(served: Sequence[str], priorities: Mapping[str, str | None]) -> str:
    """The pool's JobTypes with their priority level (None: the JobType is not there)."""
    shown = (f"{name} ({priorities.get(name) or 'not found'})" for name in served)
    return "  job types  " + ", ".join(shown)


def render_status(
    pool: Mapping[str, Any], now: datetime, priorities: Mapping[str, str | None] | None = None
) -> str:
    """A readable view of a pool's rollout, from the pool as stored; `priorities`: each served
    JobType's priority level, as read."""
    metadata, spec = pool["metadata"], pool.get("spec") or {}
    status = pool.get("status") or {}
    rollout = status.get("rollout") or {}
    canary = (spec.get("rollout") or {}).get("canary") or {}
    steps = canary.get("steps") or []
    phase = rollout.get("phase", "Unknown")
    total = status.get("replicas", 0)
    canary_replicas = status.get("canaryReplicas", 0)
    lines = [
        f"WorkerPool {metadata['namespace']}/{metadata['name']}: {phase}"
        + (" (spec.paused)" if spec.get("paused") else ""),
        f"  stable  {status.get('stableRevision', '-'):<12} {total - canary_replicas} replicas",
    ]
    if status.get("canaryRevision"):
        step = rollout.get("step", 0)
        left = pause_left(steps[step - 1], rollout, now) if 0 < step <= len(steps) else ""
        lines.append(f"  canary  {status['canaryRevision']:<12} {canary_replicas} replicas")
        lines.append(
            f"  step    {step} of {len(steps)}  {progress_bar(rollout.get('weight', 0))}"
            + (f"  {left}" if left else "")
        )
        if rollout.get("failedAnalyses"):
            lines.append(f"  failed analyses: {rollout['failedAnalyses']}")
    if priorities is not None and spec.get("jobTypes"):
        lines.append(job_types_line(spec["jobTypes"], priorities))
    if rollout.get("message"):
        lines.append(f"  {rollout['message']}")
    last = rollout.get("lastAnalysis")
    if last:
        lines.append(
            f"  last analysis {last.get('time', '')}: {last.get('verdict')}"
            f" (canary {_rate(last.get('canaryErrorRate'))} of {last.get('canarySamples', 0)} jobs,"
            f" stable {_rate(last.get('stableErrorRate'))} of {last.get('stableSamples', 0)} jobs)"
        )
        if canary.get("analysis"):
            lines.append(f"  {_thresholds(canary['analysis'])}")
    condition = degraded(pool)
    if condition is not None:
        lines.append(f"  Degraded: {condition.get('reason', '')}: {condition.get('message', '')}")
    return "\n".join(lines)


def action_patch(action: Action, revision: str, now: datetime) -> dict[str, Any]:
    token = now.strftime("%Y%m%dT%H%M%S.%fZ")
    return {"metadata": {"annotations": {ROLLOUT_ACTION_ANNOTATION: action_value(action, revision, token)}}}


def action_target(action: Action, pool: Mapping[str, Any]) -> str | None:
    """The canary revision `action` is for, or None when the rollout as stored cannot take it."""
    status = pool.get("status") or {}
    revision = status.get("canaryRevision")
    phase = (status.get("rollout") or {}).get("phase")
    wanted = (RolloutPhase.DEGRADED,) if action == Action.RETRY else RUNNING_PHASES
    return str(revision) if revision and phase in wanted else None


def _get(api: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return api.read(API_VERSION, "WorkerPool", namespace, name)


def _priorities(api: Kube, namespace: str, pool: Mapping[str, Any]) -> dict[str, str | None]:
    """Each served JobType's priority (normal when not set), None for one that is not there."""
    priorities: dict[str, str | None] = {}
    for name in (pool.get("spec") or {}).get("jobTypes") or []:
        found = api.read(API_VERSION, "JobType", namespace, name)
        priorities[name] = None if found is None else (found.get("spec") or {}).get("priority") or "normal"
    return priorities


def show_status(
    args: argparse.Namespace,
    api: Kube,
    write: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    *,
    terminal: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Print the pool's view; with --watch, redraw it in place every tick on a terminal (the pause
    counts down), or print it again only when the pool changed when the output is piped."""
    shown: Mapping[str, Any] | None = None
    drawn = 0
    while True:
        pool = _get(api, args.namespace, args.name)
        if pool is None:
            write(f"WorkerPool {args.namespace}/{args.name} not found")
            return EXIT_NOT_FOUND
        if terminal or pool != shown:
            view = render_status(pool, now(), _priorities(api, args.namespace, pool))
            write((f"\x1b[{drawn}F\x1b[J" if terminal and drawn else "") + view)
            shown, drawn = pool, view.count("\n") + 1
        if not args.watch:
            phase = ((pool.get("status") or {}).get("rollout") or {}).get("phase")
            return EXIT_DEGRADED if phase == RolloutPhase.DEGRADED or degraded(pool) is not None else 0
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


def _breaker(args: argparse.Namespace, api: Kube, write: Callable[[str], None]) -> int:
    """Ask the operator to reset or open the pool's circuit breaker; it acts on each token once."""
    pool = _get(api, args.namespace, args.name)
    if pool is None:
        write(f"WorkerPool {args.namespace}/{args.name} not found")
        return EXIT_NOT_FOUND
    if not (pool.get("spec") or {}).get("circuitBreaker"):
        write(
            f"workerpool {args.namespace}/{args.name}: no spec.circuitBreaker,"
            f" so breaker {args.verb} has nothing to act on"
        )
        return EXIT_NO_ROLLOUT
    token = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    api.patch_pool(
        args.namespace,
        args.name,
        {"metadata": {"annotations": {BREAKER_ACTION_ANNOTATION: f"{args.verb}/{token}"}}},
    )
    write(f"workerpool {args.namespace}/{args.name}: breaker {args.verb} requested")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl workerfleet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_cluster_arguments(parser, namespace_help="namespace of the pool (default: the context's)")
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
    breaker = commands.add_parser("breaker", help="reset the circuit breaker, or open it until reset")
    breaker.add_argument("verb", choices=[BreakerAction.RESET, BreakerAction.OPEN])
    for sub in commands.choices.values():
        sub.add_argument("name", help="name of the WorkerPool")
        add_cluster_arguments(sub, namespace_help="namespace of the pool", repeated=True)
    triage_commands.add_commands(
        commands,
        lambda sub: add_cluster_arguments(sub, namespace_help="namespace of the pool", repeated=True),
    )
    return parser


PLUGIN_COMPONENT = "kubectl-workerfleet"
EXIT_API_ERROR = 4


def _dispatch(args: argparse.Namespace, api: Kube) -> int:
    if args.command in triage_commands.COMMANDS:
        # Each line as it happens: a command cut short has said what it did.
        return triage_commands.run(args, api, functools.partial(print, flush=True))
    if args.command == "status":
        return show_status(args, api, print, terminal=sys.stdout.isatty())
    if args.command == "breaker":
        return _breaker(args, api, print)
    return _act(args, api, print)


def main(argv: Sequence[str] | None = None, api: Kube | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = cluster_options(args, PLUGIN_COMPONENT)
    try:
        args.namespace = current_namespace(options)
        return _dispatch(args, api or Kube(Rest(options)))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_API_ERROR
    except ApiError as error:
        print(f"error: the API server: {error}", file=sys.stderr)
        return EXIT_API_ERROR
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
