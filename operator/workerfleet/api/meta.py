"""The part of Kubernetes object metadata the API models read; everything else the server sets is ignored."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from workerfleet.api.base import ApiModel


class ObjectMeta(ApiModel):
    """Standard object metadata (name, namespace, labels, ...); fields not listed here are ignored."""

    model_config = ConfigDict(extra="ignore")

    name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """Name of the object, unique in its namespace."""
    namespace: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    """Namespace of the object."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels of the object."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the object."""
    generation: Annotated[int, Field(ge=0)] | None = None
    """Sequence number of the desired state, set by the API server."""
