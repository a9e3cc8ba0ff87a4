"""Response bodies of the external metrics API, and parsing of its label selectors: pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workerfleet.adapter.readings import Reading
from workerfleet.planners.children import POOL_LABEL, QUEUE_DEPTH_METRIC

GROUP_VERSION = "external.metrics.k8s.io/v1beta1"


class SelectorError(ValueError):
    """A label selector this API cannot evaluate."""


def resource_list() -> dict[str, Any]:
    """Discovery: the one metric this server serves."""
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": QUEUE_DEPTH_METRIC,
                "singularName": "",
                "namespaced": True,
                "kind": "ExternalMetricValueList",
                "verbs": ["get"],
            }
        ],
    }


def parse_selector(text: str) -> dict[str, str]:
    """Equality-based label selectors (`a=b,c==d`), which is what an HPA's matchLabels sends."""
    requirements: dict[str, str] = {}
    for term in filter(None, (part.strip() for part in text.split(","))):
        key, separator, value = term.replace("==", "=").partition("=")
        if not separator or "!" in key or not key.strip():
            raise SelectorError(f"unsupported label selector term {term!r}: use key=value terms only")
        requirements[key.strip()] = value.strip()
    return requirements


def metric_values(
    namespace: str, selector: Mapping[str, str], readings: Mapping[str, Reading]
) -> dict[str, Any]:
    """The pools in `namespace` that match `selector`, each with its latest reading."""
    items = []
    for pool in sorted(readings):
        labels = {POOL_LABEL: pool, "namespace": namespace}
        if any(labels.get(key) != value for key, value in selector.items()):
            continue
        reading = readings[pool]
        items.append(
            {
                "metricName": QUEUE_DEPTH_METRIC,
                "metricLabels": labels,
                "timestamp": reading.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "value": str(reading.value),
            }
        )
    return {"kind": "ExternalMetricValueList", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}


def status_error(code: int, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Status, which is how Kubernetes clients expect errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
