"""The priority weighting as pure logic: the window of turns, where a turn looks for its job, and what
a lone worker takes from a backlog."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import pytest

from workerfleet.api.jobtype import JobTypeSpec, Priority
from workerfleet.planners.priority import (
    LEVELS,
    RABBITMQ_SEPARATOR,
    level_queue,
    levels_served,
    take_order,
    turns,
    window,
)

H, N, L = Priority.HIGH, Priority.NORMAL, Priority.LOW


def served_by_one_worker(backlog: Mapping[Priority, int], count: int) -> list[Priority]:
    """The levels of the first `count` jobs a worker taking one at a time serves from `backlog`."""
    left = dict(backlog)
    levels = levels_served(level for level, jobs in backlog.items() if jobs)
    taken: list[Priority] = []
    for turn in turns(levels, 0, count):
        found = next((level for level in take_order(levels, turn) if left[level] > 0), None)
        if found is None:
            break
        left[found] -= 1
        taken.append(found)
    return taken


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        (LEVELS, (H, N, H, L, H, N, H)),
        ((H, N), (H, N, H, H, N, H)),
        ((H, L), (H, H, L, H, H)),
        ((N, L), (N, L, N)),
        ((N,), (N, N)),
        ((L,), (L,)),
    ],
    ids=["all three 4:2:1", "high and normal 4:2", "high and low 4:1", "normal and low 2:1", "normal", "low"],
)
def test_a_window_gives_each_level_its_weight_interleaved(
    levels: Sequence[Priority], expected: tuple[Priority, ...]
) -> None:
    assert window(levels) == expected


@pytest.mark.parametrize(
    ("start", "count", "expected"),
    [
        (0, 3, [H, N, H]),
        (5, 4, [N, H, H, N]),  # across the end of one window into the next
        (7, 7, [H, N, H, L, H, N, H]),
        (3, 0, []),
    ],
)
def test_turns_continue_the_window_where_the_last_take_stopped(
    start: int, count: int, expected: list[Priority]
) -> None:
    assert turns(LEVELS, start, count) == expected


@pytest.mark.parametrize(
    ("turn", "expected"),
    [(H, [H, N, L]), (N, [N, H, L]), (L, [L, H, N])],
)
def test_a_turn_without_a_job_of_its_level_goes_to_the_highest_level_with_one(
    turn: Priority, expected: list[Priority]
) -> None:
    assert take_order(LEVELS, turn) == expected


@pytest.mark.parametrize(
    ("backlog", "count", "expected"),
    [
        # Every level busy: 4:2:1, a low job in the first window.
        ({H: 20, N: 20, L: 20}, 14, [H, N, H, L, H, N, H] * 2),
        # High runs out: its turns go to normal, the highest level left.
        ({H: 1, N: 5, L: 5}, 7, [H, N, N, L, N, N, N]),
        # Only low waits: it takes every turn.
        ({H: 0, N: 0, L: 3}, 5, [L, L, L]),
    ],
    ids=["all levels", "high runs out", "low alone"],
)
def test_a_lone_worker_serves_a_backlog_by_the_weights_without_idling(
    backlog: Mapping[Priority, int], count: int, expected: list[Priority]
) -> None:
    assert served_by_one_worker(backlog, count) == expected


def test_a_low_job_never_waits_for_more_than_six_others() -> None:
    order = served_by_one_worker({H: 1000, N: 1000, L: 1000}, 700)
    lows = [index for index, level in enumerate(order) if level == L]
    assert lows[0] <= 6
    assert all(later - earlier <= 7 for earlier, later in pairwise(lows))


@pytest.mark.parametrize(
    ("used", "expected"),
    [((), (N,)), ((L, H, H), (H, L)), ((N, N), (N,)), ((L, N, H), (H, N, L))],
)
def test_levels_served_are_those_used_highest_first_and_normal_when_none(
    used: tuple[Priority, ...], expected: tuple[Priority, ...]
) -> None:
    assert levels_served(used) == expected


@pytest.mark.parametrize(
    ("level", "separator", "expected"),
    [
        (N, ":", "jobs"),
        (H, ":", "jobs:priority:high"),
        (L, ":", "jobs:priority:low"),
        (N, RABBITMQ_SEPARATOR, "jobs"),
        (H, RABBITMQ_SEPARATOR, "jobs.priority.high"),
    ],
)
def test_normal_jobs_keep_the_pools_own_queue(level: Priority, separator: str, expected: str) -> None:
    assert level_queue("jobs", level, separator) == expected


def test_a_job_type_without_priority_is_normal_and_an_unknown_one_is_refused_by_name() -> None:
    assert JobTypeSpec.model_validate({"lane": "fast", "timeoutSeconds": 5}).priority == N
    with pytest.raises(ValueError, match="priority") as refused:
        JobTypeSpec.model_validate({"lane": "fast", "timeoutSeconds": 5, "priority": "urgent"})
    assert "'high', 'normal' or 'low'" in str(refused.value)
