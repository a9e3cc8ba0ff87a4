"""`workerfleet enqueue`: put one job on a pool's queue, checked against its JobType first; with
--delay or --at, it reaches the queue at that time.

Prints the envelope enqueued (JSON) on stdout and where it went on stderr. Exit 2, with nothing
enqueued, when the job would not run as given (the message names the field); exit 1 when the queue
cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from workerfleet.cli.cluster_flags import add_cluster_arguments, cluster_options

ENQUEUE_COMPONENT = "enqueue"
EXIT_INVALID = 2
EXIT_UNREACHABLE = 1
CLUSTER_DEPENDENCIES = frozenset({"urllib3", "kubernetes"})
"""The `cluster` extra: absent from a worker image, needed only to read the pool from the cluster."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True, help="the WorkerPool whose queue gets the job")
    parser.add_argument("--type", required=True, dest="job_type", help="the job's JobType")
    parser.add_argument("--data", required=True, help="the job's payload, JSON")
    parser.add_argument("--key", help="idempotency key: set at the JobType's idempotency.keyField")
    parser.add_argument(
        "--deadline", help="the job's own deadline (90s, 10m, 2h): shorter than the JobType's"
    )
    parser.add_argument("--id", dest="job_id", help="the job's id (default: a random UUID)")
    parser.add_argument("--delay", help="run the job no sooner than this from now (90s, 10m, 2h)")
    parser.add_argument("--at", help="run the job no sooner than this time (2026-05-01T03:00:00Z)")
    add_cluster_arguments(parser, namespace_help="namespace of the pool (default: the context's)")
    parser.add_argument("--pool-file", help="read the WorkerPool from this manifest instead of the cluster")
    parser.add_argument(
        "--job-type-file",
        action="append",
        default=[],
        metavar="FILE",
        help="read the JobType from this manifest instead of the cluster (repeatable)",
    )
    parser.add_argument(
        "--address", help="the queue server's HOST:PORT, instead of the pool's (e.g. a port-forward)"
    )


def run(args: argparse.Namespace) -> int:
    # Imported here: `workerfleet run` (the operator) parses the same command line and needs none of
    # the queue clients.
    from workerfleet import producer  # noqa: PLC0415
    from workerfleet.worker.backend import BackendUnavailable  # noqa: PLC0415
    from workerfleet.worker.envelope import encode  # noqa: PLC0415

    try:
        try:
            data = json.loads(args.data)
        except ValueError as error:
            raise producer.InvalidJob(f"--data is not JSON: {error}") from None
        if args.pool_file:
            if not args.job_type_file:
                raise producer.InvalidJob("--pool-file needs --job-type-file too")
            target = producer.from_files(
                args.pool_file, args.job_type_file, job_type=args.job_type, address=args.address
            )
            if target.pool != args.pool:
                raise producer.InvalidJob(f"{args.pool_file} holds WorkerPool {target.pool}, not {args.pool}")
        else:
            try:
                from workerfleet.kube import credentials, rest  # noqa: PLC0415  (cluster only)
            except ModuleNotFoundError as error:
                if (error.name or "").partition(".")[0] not in CLUSTER_DEPENDENCIES:
                    raise
                raise producer.ConfigurationError(
                    "reading the pool from the cluster needs the Kubernetes client: "
                    "pip install 'workerfleet[cluster]', or give --pool-file and --job-type-file"
                ) from None
            options = cluster_options(args, ENQUEUE_COMPONENT)
            try:
                target = producer.from_cluster(
                    credentials.current_namespace(options),
                    pool=args.pool,
                    job_type=args.job_type,
                    job_type_files=args.job_type_file,
                    address=args.address,
                    cluster=options,
                )
            except credentials.ConfigError as error:
                raise producer.ConfigurationError(str(error)) from None
            except rest.ApiError as error:
                print(f"error: the API server: {error}; nothing enqueued", file=sys.stderr)
                return EXIT_UNREACHABLE
        envelope = producer.build(
            target,
            data,
            key=args.key,
            deadline=args.deadline,
            job_id=args.job_id,
            delay=args.delay,
            at=args.at,
        )
        asyncio.run(producer.send(target, [envelope]))
    except (producer.InvalidJob, producer.ConfigurationError) as error:
        print(f"error: {error}; nothing enqueued", file=sys.stderr)
        return EXIT_INVALID
    except BackendUnavailable as error:
        print(
            f"error: {producer.describe(target.queue)} unreachable: {error}; nothing enqueued",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    print(encode(envelope).decode())
    due = f", due at {envelope.enqueued_at.isoformat()}" if args.delay or args.at else ""
    print(
        f"enqueued job {envelope.id} of type {envelope.type} on {producer.describe(target.queue)}{due}",
        file=sys.stderr,
    )
    return 0
