"""A JobType's input schema judged as JSON Schema, and the Accepted condition it gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.planners.job_type import ACCEPTED, JobTypeReason, input_schema_problem, plan_job_type_status
from workerfleet.planners.status import Event

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PROBLEM = "input.schema is not a valid JSON Schema: at input.schema.type: 'nope' is not valid"


def _spec(schema: dict[str, Any] | None) -> JobTypeSpec:
    body: dict[str, Any] = {"lane": "fast", "timeoutSeconds": 10}
    if schema is not None:
        body["input"] = {"schema": schema}
    return JobTypeSpec.model_validate(body)


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (None, None),
        ({}, None),
        ({"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}, None),
        ({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}, None),
        ({"type": "nope"}, "at input.schema.type: 'nope' is not valid"),
        ({"properties": {"size": {"minimum": "ten"}}}, "at input.schema.properties.size.minimum: 'ten'"),
        ({"required": "url"}, "at input.schema.required: 'url' is not of type 'array'"),
        ({"$schema": "http://json-schema.org/draft-07/schema#", "type": 3}, "at input.schema.type"),
    ],
)
def test_input_schema_problem(schema: dict[str, Any] | None, expected: str | None) -> None:
    problem = input_schema_problem(_spec(schema))
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert problem.startswith("input.schema is not a valid JSON Schema: ")
        assert expected in problem


def _accepted(
    status: str, reason: str, message: str, *, at: datetime = NOW - timedelta(hours=1)
) -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": ACCEPTED,
                "status": status,
                "reason": reason,
                "message": message,
                "observedGeneration": 1,
                "lastTransitionTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ],
    }


VALID_MESSAGE = "the job type can be served as written"
INVALID_MESSAGE = f"{PROBLEM}. The pools that serve it keep their workers as they are until it is fixed"


@pytest.mark.parametrize(
    ("current", "problem", "state", "events", "changed", "transitioned"),
    [
        # first judgement of a valid JobType: recorded, no Event
        (None, None, ("True", JobTypeReason.VALID), [], True, True),
        # first judgement of an invalid one: recorded with a Warning naming the problem
        (
            None,
            PROBLEM,
            ("False", JobTypeReason.INVALID_INPUT_SCHEMA),
            [Event("Warning", JobTypeReason.INVALID_INPUT_SCHEMA, INVALID_MESSAGE)],
            True,
            True,
        ),
        # steady states write nothing and post nothing
        (
            _accepted("True", JobTypeReason.VALID, VALID_MESSAGE),
            None,
            ("True", JobTypeReason.VALID),
            [],
            False,
            False,
        ),
        (
            _accepted("False", JobTypeReason.INVALID_INPUT_SCHEMA, INVALID_MESSAGE),
            PROBLEM,
            ("False", JobTypeReason.INVALID_INPUT_SCHEMA),
            [],
            False,
            False,
        ),
        # valid -> invalid: a Warning, a transition
        (
            _accepted("True", JobTypeReason.VALID, VALID_MESSAGE),
            PROBLEM,
            ("False", JobTypeReason.INVALID_INPUT_SCHEMA),
            [Event("Warning", JobTypeReason.INVALID_INPUT_SCHEMA, INVALID_MESSAGE)],
            True,
            True,
        ),
        # fixed: a Normal Event, a transition
        (
            _accepted("False", JobTypeReason.INVALID_INPUT_SCHEMA, INVALID_MESSAGE),
            None,
            ("True", JobTypeReason.VALID),
            [Event("Normal", JobTypeReason.VALID, VALID_MESSAGE)],
            True,
            True,
        ),
        # still invalid, for another reason: a new Warning, the transition time kept
        (
            _accepted("False", JobTypeReason.INVALID_INPUT_SCHEMA, "an older problem"),
            PROBLEM,
            ("False", JobTypeReason.INVALID_INPUT_SCHEMA),
            [Event("Warning", JobTypeReason.INVALID_INPUT_SCHEMA, INVALID_MESSAGE)],
            True,
            False,
        ),
    ],
)
def test_plan_job_type_status(
    current: dict[str, Any] | None,
    problem: str | None,
    state: tuple[str, str],
    events: list[Event],
    changed: bool,
    transitioned: bool,
) -> None:
    status, posted, did_change = plan_job_type_status(1, problem, current, NOW)
    [condition] = [c for c in status["conditions"] if c["type"] == ACCEPTED]
    assert (condition["status"], condition["reason"]) == state
    assert condition["observedGeneration"] == 1
    assert status["observedGeneration"] == 1
    assert posted == events
    assert did_change is changed
    assert (condition["lastTransitionTime"] == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")) is transitioned


def test_a_new_generation_is_recorded_without_a_transition() -> None:
    status, events, changed = plan_job_type_status(
        2, None, _accepted("True", JobTypeReason.VALID, VALID_MESSAGE), NOW
    )
    assert changed
    assert events == []
    assert status["observedGeneration"] == 2
    assert status["conditions"][0]["observedGeneration"] == 2
    assert status["conditions"][0]["lastTransitionTime"] != NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
