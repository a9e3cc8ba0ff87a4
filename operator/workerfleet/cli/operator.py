"""`workerfleet run`: the operator itself. Imported only by that command, since it needs the operator's
dependencies (kopf, the Kubernetes REST client), which a worker image does not install."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, cast

import kopf

from workerfleet.cli.peering import default_identity, random_priority
from workerfleet.kube.credentials import origin
from workerfleet.kube.options import ClusterOptions


def run(args: argparse.Namespace) -> int:
    if not args.admission_policy and not args.no_admission_policy:
        print(
            "error: name the admission policies that guard pools (--admission-policy NAME, as the chart"
            " does), or pass --no-admission-policy to serve pools unchecked (development only)",
            file=sys.stderr,
        )
        return 2
    import workerfleet.handlers  # noqa: F401, PLC0415  (registers the handlers with kopf)

    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    from workerfleet.handlers.metrics_api import MetricsApiSettings, RegistrationSettings  # noqa: PLC0415
    from workerfleet.kube.client import configure  # noqa: PLC0415

    configure(qps=args.api_qps, burst=args.api_burst)
    from workerfleet.handlers import tenancy  # noqa: PLC0415

    tenancy.configure(
        tenancy.Tenancy(
            delegable=tuple(args.delegable_permissions),
            queue_credentials_role=args.queue_credentials_role,
            queue_addresses=tuple(args.allow_queue_address),
            prometheus_addresses=tuple(args.allow_prometheus),
            watch_namespaces=tuple(args.namespace),
        )
    )

    from workerfleet.handlers import admission  # noqa: PLC0415

    admission.configure(
        admission.AdmissionSettings(
            policies=tuple(args.admission_policy), enforced=not args.no_admission_policy
        )
    )

    metrics_api = MetricsApiSettings(
        address=args.metrics_api_address,
        port=args.metrics_api_port,
        cert_file=args.metrics_api_cert,
        key_file=args.metrics_api_key,
        service_names=tuple(args.metrics_api_service) or MetricsApiSettings.service_names,
        registration=None
        if args.register_metrics_api is None
        else RegistrationSettings(
            namespace=args.register_metrics_api[0],
            service=args.register_metrics_api[1],
            port=args.metrics_api_service_port,
            ca_file=args.metrics_api_ca_file,
            owner_cluster_role=args.metrics_api_owner_cluster_role,
        ),
    )
    from workerfleet.handlers.activity import PeeringSettings, pod_from_environment  # noqa: PLC0415

    namespaces = tuple(args.namespace)
    memo = kopf.Memo(
        metrics_api=metrics_api,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        resync_seconds=args.resync_period,
        watch_namespaces=namespaces,
    )
    if args.standalone:
        return _run_until_refused(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=args.liveness,
            memo=memo,
        )
    identity = args.identity or default_identity()
    priority = args.priority if args.priority is not None else random_priority()
    memo["peering"] = PeeringSettings(
        name=args.peering,
        identity=identity,
        priority=priority,
        lifetime_seconds=args.peering_lifetime,
        namespaces=namespaces,
        pod=pod_from_environment() if args.label_active_pod else None,
        pod_selector=args.active_pod_selector or None,
    )
    return _run_until_refused(
        clusterwide=not namespaces,
        namespaces=namespaces,
        peering_name=args.peering,
        priority=priority,
        identity=cast("Any", identity),  # kopf's Identity is a NewType of str
        liveness_endpoint=args.liveness,
        memo=memo,
    )


EXIT_CREDENTIALS_REFUSED = 3
"""The exit status when the API server refuses the operator's credentials and no others are found."""


def _run_until_refused(**kopf_options: Any) -> int:
    """kopf until it stops; when the API server refused the credentials and logging in again read the
    same ones, one error naming where they come from, and an exit status that restarts the pod (the
    kubelet's restart back-off then paces the attempts, not a loop of refused requests)."""
    try:
        kopf.run(**kopf_options)
    except kopf.LoginError:
        logging.getLogger("workerfleet").error(
            "the API server refused the operator's credentials (401 Unauthorized) from %s, and reading"
            " them again gave the same ones: exiting. A deleted ServiceAccount or revoked token must be"
            " replaced (helm upgrade recreates the chart's ServiceAccount; then kubectl rollout restart"
            " the operator, as the kubelet keeps the old token until it is due for renewal)",
            origin(ClusterOptions()),
        )
        return EXIT_CREDENTIALS_REFUSED
    return 0
