from __future__ import annotations

import kopf

from workerfleet.handlers.reconcile_queue import MAX_CONCURRENT_RECONCILES
from workerfleet.handlers.startup import WATCH_INACTIVITY_TIMEOUT_SECONDS, apply_settings


def test_settings_for_production() -> None:
    settings = kopf.OperatorSettings()
    apply_settings(settings)
    assert settings.watching.inactivity_timeout == WATCH_INACTIVITY_TIMEOUT_SECONDS
    assert settings.watching.server_timeout is not None
    assert settings.watching.client_timeout is not None
    assert settings.watching.client_timeout > settings.watching.server_timeout
    assert settings.queueing.worker_limit is None, "a worker limit deadlocks start-up past that many objects"
    assert settings.execution.max_workers == MAX_CONCURRENT_RECONCILES
    assert settings.posting.reporting_component == "workerfleet"


def test_kopf_bookkeeping_lives_in_annotations_not_status() -> None:
    # A structural CRD schema prunes unknown status fields; annotations survive.
    settings = kopf.OperatorSettings()
    apply_settings(settings)
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.persistence.progress_storage.prefix == "workerfleet.dev"


def test_api_retries_are_never_far_apart_and_last_about_a_minute() -> None:
    """A watch comes back within seconds of the API server, and kopf still gives up on a dead one."""
    settings = kopf.OperatorSettings()
    apply_settings(settings)
    backoffs = list(settings.networking.error_backoffs)  # type: ignore[arg-type]
    assert max(backoffs) <= 2
    assert 50 <= sum(backoffs) <= 70


def test_an_operator_bound_to_named_namespaces_never_asks_for_the_namespace_list() -> None:
    # kopf retried the forbidden cluster-wide list for a minute before serving any namespace
    namespaced, cluster_wide = kopf.OperatorSettings(), kopf.OperatorSettings()
    apply_settings(namespaced, watch_namespaces=("media", "batch"))
    apply_settings(cluster_wide)
    assert namespaced.scanning.disabled is True
    assert cluster_wide.scanning.disabled is False
