"""Status conditions with the semantics of Kubernetes `metav1.Condition`.

`lastTransitionTime` records when a condition's status last flipped, not when it was last written:
`kubectl describe` and alerting read it as "how long has this been broken", so rewriting reason or
message must leave it alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field

from workerfleet.api.base import ApiModel, Count, Timestamp, first_repeated

CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_MESSAGE_MAX_LENGTH = 32768
MAX_CONDITIONS = 16


class ConditionStatus(StrEnum):
    """Whether a condition holds; Unknown while it cannot be judged."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


ConditionType = Annotated[str, Field(min_length=1, max_length=316, pattern=CONDITION_TYPE_PATTERN)]
ConditionReason = Annotated[str, Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)]
ConditionMessage = Annotated[str, Field(max_length=CONDITION_MESSAGE_MAX_LENGTH)]


class Condition(ApiModel):
    """One aspect of an object's current state, in the shape of Kubernetes `metav1.Condition`."""

    type: ConditionType
    """Aspect this condition describes, in CamelCase, e.g. Ready or QueueReachable."""
    status: Annotated[ConditionStatus, Field(strict=False)]
    """Whether the condition holds: True, False, or Unknown."""
    observed_generation: Count | None = None
    """metadata.generation of the object this condition was judged against."""
    last_transition_time: Timestamp
    """When the status last changed from one value to another."""
    reason: ConditionReason
    """Programmatic identifier, in CamelCase, of why the condition has its status."""
    message: ConditionMessage
    """Human-readable details of the last judgement; may be empty."""


def _one_per_type(conditions: list[Condition]) -> list[Condition]:
    repeated = first_repeated([condition.type for condition in conditions])
    if repeated is not None:
        raise ValueError(f"duplicate condition type: {repeated}")
    return conditions


Conditions = Annotated[
    list[Condition],
    AfterValidator(_one_per_type),
    Field(
        max_length=MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]
"""A status's conditions: at most one per type, as the API server enforces for a list of type map."""


class ConditionUpdate(ApiModel):
    """A freshly judged condition, before `set_condition` decides its lastTransitionTime."""

    type: ConditionType
    """Aspect this condition describes."""
    status: Annotated[ConditionStatus, Field(strict=False)]
    """Whether the condition holds."""
    reason: ConditionReason
    """Programmatic identifier of why."""
    message: ConditionMessage = ""
    """Human-readable details."""
    observed_generation: Count | None = None
    """metadata.generation this judgement was made against."""


def set_condition(conditions: Sequence[Condition], new: ConditionUpdate, now: datetime) -> list[Condition]:
    """Return `conditions` with `new` recorded: replaced in place when its type exists, else appended.

    The lastTransitionTime becomes `now` only when the type is new or its status flips; a change of
    reason, message or generation alone keeps the earlier transition time.
    """
    updated: list[Condition] = []
    recorded = False
    for existing in conditions:
        if existing.type != new.type:
            updated.append(existing)
            continue
        if recorded:
            continue  # a duplicate of a type already replaced
        transition_time = now if existing.status != new.status else existing.last_transition_time
        updated.append(_recorded(new, transition_time))
        recorded = True
    if not recorded:
        updated.append(_recorded(new, now))
    return updated


def find_condition(conditions: Sequence[Condition], condition_type: str) -> Condition | None:
    """The condition of `condition_type`, or None when it has not been recorded."""
    return next((condition for condition in conditions if condition.type == condition_type), None)


def _recorded(new: ConditionUpdate, transition_time: datetime) -> Condition:
    return Condition(
        type=new.type,
        status=new.status,
        observed_generation=new.observed_generation,
        last_transition_time=transition_time,
        reason=new.reason,
        message=new.message,
    )
