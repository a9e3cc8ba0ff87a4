"""set_condition follows metav1.Condition: lastTransitionTime moves only when the status flips."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from workerfleet.api.conditions import (
    Condition,
    ConditionStatus,
    ConditionUpdate,
    find_condition,
    set_condition,
)

EARLIER = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 1, 1, 12, 5, tzinfo=UTC)
TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


def condition(
    type_: str, status: ConditionStatus, reason: str = "Reason", message: str = "", generation: int | None = 1
) -> Condition:
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=EARLIER,
    )


def update(
    type_: str, status: ConditionStatus, reason: str = "Reason", message: str = "", generation: int | None = 1
) -> ConditionUpdate:
    return ConditionUpdate(
        type=type_, status=status, reason=reason, message=message, observed_generation=generation
    )


@dataclass(frozen=True)
class Case:
    name: str
    before: list[Condition]
    new: ConditionUpdate
    after: list[tuple[str, ConditionStatus, str, str, int | None, datetime]]


CASES = [
    Case(
        "a new type is appended and transitions now",
        [],
        update("Ready", TRUE),
        [("Ready", TRUE, "Reason", "", 1, NOW)],
    ),
    Case(
        "the same status keeps the transition time",
        [condition("Ready", TRUE)],
        update("Ready", TRUE),
        [("Ready", TRUE, "Reason", "", 1, EARLIER)],
    ),
    Case(
        "a new reason and message without a flip keep the transition time",
        [condition("Ready", FALSE, "QueueUnreachable", "connection refused")],
        update("Ready", FALSE, "JobTypeMissing", "jobtype resize-image not found"),
        [("Ready", FALSE, "JobTypeMissing", "jobtype resize-image not found", 1, EARLIER)],
    ),
    Case(
        "a newer generation without a flip keeps the transition time",
        [condition("Ready", TRUE, generation=1)],
        update("Ready", TRUE, generation=2),
        [("Ready", TRUE, "Reason", "", 2, EARLIER)],
    ),
    Case(
        "True to False transitions now",
        [condition("Ready", TRUE)],
        update("Ready", FALSE, "Degraded"),
        [("Ready", FALSE, "Degraded", "", 1, NOW)],
    ),
    Case(
        "Unknown to True transitions now",
        [condition("Ready", UNKNOWN)],
        update("Ready", TRUE),
        [("Ready", TRUE, "Reason", "", 1, NOW)],
    ),
    Case(
        "False to Unknown transitions now",
        [condition("QueueReachable", FALSE)],
        update("QueueReachable", UNKNOWN),
        [("QueueReachable", UNKNOWN, "Reason", "", 1, NOW)],
    ),
    Case(
        "other types are left alone and keep their order",
        [condition("Available", TRUE), condition("Ready", TRUE), condition("Progressing", FALSE)],
        update("Ready", FALSE),
        [
            ("Available", TRUE, "Reason", "", 1, EARLIER),
            ("Ready", FALSE, "Reason", "", 1, NOW),
            ("Progressing", FALSE, "Reason", "", 1, EARLIER),
        ],
    ),
    Case(
        "a duplicate of the updated type is dropped",
        [condition("Ready", TRUE), condition("Ready", FALSE)],
        update("Ready", TRUE),
        [("Ready", TRUE, "Reason", "", 1, EARLIER)],
    ),
    Case(
        "an absent generation is recorded as absent",
        [condition("Ready", TRUE, generation=3)],
        update("Ready", TRUE, generation=None),
        [("Ready", TRUE, "Reason", "", None, EARLIER)],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_set_condition(case: Case) -> None:
    result = set_condition(case.before, case.new, NOW)
    assert [
        (c.type, c.status, c.reason, c.message, c.observed_generation, c.last_transition_time) for c in result
    ] == case.after


def test_set_condition_leaves_its_input_alone() -> None:
    before = [condition("Ready", TRUE)]
    snapshot = [c.model_copy() for c in before]
    set_condition(before, update("Ready", FALSE), NOW)
    assert before == snapshot


def test_find_condition() -> None:
    conditions = [condition("Available", TRUE), condition("Ready", FALSE)]
    found = find_condition(conditions, "Ready")
    assert found is not None
    assert found.status is FALSE
    assert find_condition(conditions, "Fallback") is None


def test_conditions_serialise_as_metav1_condition() -> None:
    [recorded] = set_condition([], update("QueueReachable", FALSE, "ConnectionRefused", "redis:6379"), NOW)
    assert recorded.to_dict() == {
        "type": "QueueReachable",
        "status": "False",
        "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T12:05:00Z",
        "reason": "ConnectionRefused",
        "message": "redis:6379",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", "not a type"),
        ("reason", "has spaces"),
        ("reason", ""),
        ("status", "Maybe"),
        ("last_transition_time", "2026-01-01T12:00:00"),
        ("last_transition_time", 1767268800),
        ("observed_generation", -1),
    ],
)
def test_condition_fields_are_checked_like_metav1(field: str, value: object) -> None:
    fields: dict[str, object] = {
        "type": "Ready",
        "status": "True",
        "reason": "Fine",
        "message": "",
        "last_transition_time": "2026-01-01T12:00:00Z",
        field: value,
    }
    with pytest.raises(ValidationError):
        Condition.model_validate(fields)
