"""JobType priorities: where each level's jobs wait, and the order in which a worker takes them.

Each level has a queue of its own beside the pool's: normal jobs use the pool's queue itself (so a
queue written before priorities keeps working unchanged), high and low jobs `<queue>:priority:high`
and `<queue>:priority:low` on Redis, `<queue>.priority.high` and `<queue>.priority.low` on RabbitMQ.

A worker takes from its levels by weight, high:normal:low = 4:2:1: in every 7 jobs it takes while all
levels have jobs waiting, 4 are high, 2 normal and 1 low, interleaved (high, normal, high, low, high,
normal, high), so a low job waits at most 6 others however long the high backlog. A turn whose level
has no job waiting goes to the highest level that has one, so no worker idles while any job waits.
Only the levels of the JobTypes a pool serves take turns: a pool of normal jobs alone reads its queue
as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from workerfleet.api.jobtype import Priority

LEVELS: tuple[Priority, ...] = (Priority.HIGH, Priority.NORMAL, Priority.LOW)
"""Highest first: the order in which a turn's level is looked for when its own has no job."""

WEIGHTS: Mapping[Priority, int] = {Priority.HIGH: 4, Priority.NORMAL: 2, Priority.LOW: 1}
"""Turns per window, by level."""

REDIS_SEPARATOR = ":"
RABBITMQ_SEPARATOR = "."


def level_queue(queue: str, level: Priority, separator: str = REDIS_SEPARATOR) -> str:
    """Where jobs of `level` wait for a pool whose queue is `queue`."""
    if level == Priority.NORMAL:
        return queue
    return f"{queue}{separator}priority{separator}{level.value}"


def levels_served(priorities: Iterable[Priority]) -> tuple[Priority, ...]:
    """The levels a pool's JobTypes use, highest first; normal when it serves none."""
    used = set(priorities)
    return tuple(level for level in LEVELS if level in used) or (Priority.NORMAL,)


def window(levels: Sequence[Priority]) -> tuple[Priority, ...]:
    """One window of turns over `levels` by their weights, interleaved (smooth weighted round robin):
    each turn goes to the level furthest behind its share, the higher level on a tie."""
    credit = dict.fromkeys(levels, 0)
    total = sum(WEIGHTS[level] for level in levels)
    turns: list[Priority] = []
    for _ in range(total):
        for level in levels:
            credit[level] += WEIGHTS[level]
        chosen = max(levels, key=lambda level: (credit[level], -LEVELS.index(level)))
        credit[chosen] -= total
        turns.append(chosen)
    return tuple(turns)


def turns(levels: Sequence[Priority], start: int, count: int) -> list[Priority]:
    """The levels of `count` turns from position `start` of the repeating window over `levels`."""
    cycle = window(levels)
    return [cycle[(start + offset) % len(cycle)] for offset in range(count)]


def take_order(levels: Sequence[Priority], turn: Priority) -> list[Priority]:
    """Where a turn looks for its job: its own level first, then the others highest first."""
    return [turn, *(level for level in levels if level != turn)]
