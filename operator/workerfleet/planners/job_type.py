"""Whether a JobType can be served as written, and the Accepted condition that says so: pure, no I/O.

The CRD schema refuses what it can express; a JSON Schema's own validity it cannot, so it is judged
here, once for the JobType's status and again by every pool that serves it (which then keeps its
workers as they are rather than roll them to a policy they would refuse to start with).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jsonschema

from workerfleet.api.conditions import (
    Condition,
    ConditionStatus,
    ConditionUpdate,
    find_condition,
    set_condition,
)
from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.planners.status import Event

ACCEPTED = "Accepted"


class JobTypeReason:
    """Reasons of the JobType's Accepted condition and of the Events on its changes."""

    VALID = "Valid"
    INVALID_INPUT_SCHEMA = "InvalidInputSchema"


def input_schema_problem(spec: JobTypeSpec) -> str | None:
    """Why the JobType's input schema is not a JSON Schema its workers can check payloads with; None
    when it is (or there is none). Draft 2020-12 unless the schema names another draft in $schema."""
    if spec.input is None:
        return None
    schema = spec.input.payload_schema
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as error:
        where = error.json_path.replace("$", "input.schema", 1)
        return f"input.schema is not a valid JSON Schema: at {where}: {error.message}"
    return None


def plan_job_type_status(
    generation: int, problem: str | None, current: Mapping[str, Any] | None, now: datetime
) -> tuple[dict[str, Any], list[Event], bool]:
    """The JobType's new status, the Event its Accepted change deserves, and whether it changed."""
    current = dict(current or {})
    previous = [Condition.model_validate(condition) for condition in current.get("conditions") or []]
    if problem is None:
        judged = ConditionUpdate(
            type=ACCEPTED,
            status=ConditionStatus.TRUE,
            reason=JobTypeReason.VALID,
            message="the job type can be served as written",
            observed_generation=generation,
        )
    else:
        judged = ConditionUpdate(
            type=ACCEPTED,
            status=ConditionStatus.FALSE,
            reason=JobTypeReason.INVALID_INPUT_SCHEMA,
            message=f"{problem}. The pools that serve it keep their workers as they are until it is fixed",
            observed_generation=generation,
        )
    conditions = set_condition(previous, judged, now.replace(microsecond=0))
    status = {
        **current,
        "observedGeneration": generation,
        "conditions": [condition.to_dict() for condition in conditions],
    }
    normalized_current = {**current, "conditions": [condition.to_dict() for condition in previous]}
    return status, _events(find_condition(previous, ACCEPTED), judged), status != normalized_current


def _events(old: Condition | None, new: ConditionUpdate) -> list[Event]:
    if old is not None and (old.status, old.reason, old.message) == (new.status, new.reason, new.message):
        return []
    if new.status == ConditionStatus.FALSE:
        return [Event("Warning", new.reason, new.message)]
    if old is not None and old.status == ConditionStatus.FALSE:
        return [Event("Normal", new.reason, new.message)]
    return []
