"""Active or standby from the peering object's status: kopf's rule, expiry included, as a table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from workerfleet.planners.peering import (
    Role,
    RoleReason,
    RoleVerdict,
    decide_role,
    parse_peers,
    pods_to_unmark,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ME = "workerfleet-7d9c-abcde"
PRIORITY = 500


def record(priority: int, *, seen_ago: float = 0, lifetime: int = 30) -> dict[str, Any]:
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat(),
    }


CASES: list[tuple[str, dict[str, Any] | None, Role, RoleReason, tuple[str, ...], float | None]] = [
    # (case, status, role, reason, blockers, recheck in seconds from NOW)
    ("alone and registered", {ME: record(PRIORITY)}, Role.ACTIVE, RoleReason.HIGHEST_PRIORITY, (), 30),
    ("not registered yet", {}, Role.STANDBY, RoleReason.NOT_REGISTERED, (), None),
    ("no status at all", None, Role.STANDBY, RoleReason.NOT_REGISTERED, (), None),
    (
        "own record expired (kopf stopped refreshing it)",
        {ME: record(PRIORITY, seen_ago=31)},
        Role.STANDBY,
        RoleReason.NOT_REGISTERED,
        (),
        None,
    ),
    (
        "own record expires exactly now",
        {ME: record(PRIORITY, seen_ago=30)},
        Role.STANDBY,
        RoleReason.NOT_REGISTERED,
        (),
        None,
    ),
    (
        "a lower live peer",
        {ME: record(PRIORITY), "other": record(PRIORITY - 1)},
        Role.ACTIVE,
        RoleReason.HIGHEST_PRIORITY,
        (),
        30,
    ),
    (
        "a higher live peer",
        {ME: record(PRIORITY), "other": record(PRIORITY + 1, seen_ago=10)},
        Role.STANDBY,
        RoleReason.OUTRANKED,
        ("other",),
        20,
    ),
    (
        "a higher peer, not registered ourselves",
        {"other": record(PRIORITY + 1)},
        Role.STANDBY,
        RoleReason.OUTRANKED,
        ("other",),
        30,
    ),
    (
        "a higher peer that died (lifetime ran out)",
        {ME: record(PRIORITY), "other": record(PRIORITY + 1, seen_ago=31)},
        Role.ACTIVE,
        RoleReason.HIGHEST_PRIORITY,
        (),
        30,
    ),
    (
        "a higher peer dying exactly now",
        {ME: record(PRIORITY), "other": record(PRIORITY + 1, seen_ago=30)},
        Role.ACTIVE,
        RoleReason.HIGHEST_PRIORITY,
        (),
        30,
    ),
    (
        "a higher peer one second before its expiry",
        {ME: record(PRIORITY), "other": record(PRIORITY + 1, seen_ago=29)},
        Role.STANDBY,
        RoleReason.OUTRANKED,
        ("other",),
        1,
    ),
    (
        "a higher peer with a short lifetime",
        {ME: record(PRIORITY), "other": record(PRIORITY + 1, seen_ago=6, lifetime=5)},
        Role.ACTIVE,
        RoleReason.HIGHEST_PRIORITY,
        (),
        30,
    ),
    (
        "a peer with the same priority: kopf pauses both",
        {ME: record(PRIORITY), "other": record(PRIORITY, seen_ago=5)},
        Role.STANDBY,
        RoleReason.PRIORITY_COLLISION,
        ("other",),
        25,
    ),
    (
        "a dead peer with the same priority",
        {ME: record(PRIORITY), "other": record(PRIORITY, seen_ago=45)},
        Role.ACTIVE,
        RoleReason.HIGHEST_PRIORITY,
        (),
        30,
    ),
    (
        "higher and same priority: outranked wins, both block",
        {ME: record(PRIORITY), "a": record(PRIORITY, seen_ago=20), "b": record(PRIORITY + 7, seen_ago=5)},
        Role.STANDBY,
        RoleReason.OUTRANKED,
        ("b",),
        10,
    ),
    (
        "two higher peers: recheck at the first expiry",
        {ME: record(PRIORITY), "b": record(PRIORITY + 2, seen_ago=2), "a": record(PRIORITY + 1, seen_ago=20)},
        Role.STANDBY,
        RoleReason.OUTRANKED,
        ("a", "b"),
        10,
    ),
    (
        "three replicas, we are the highest",
        {ME: record(PRIORITY), "a": record(1), "b": record(PRIORITY - 100)},
        Role.ACTIVE,
        RoleReason.HIGHEST_PRIORITY,
        (),
        30,
    ),
    (
        "a record without lastseen counts as seen now",
        {ME: record(PRIORITY), "other": {"priority": PRIORITY + 1, "lifetime": 30}},
        Role.STANDBY,
        RoleReason.OUTRANKED,
        ("other",),
        30,
    ),
    (
        "a record without lifetime lives kopf's default 60 s",
        {
            ME: record(PRIORITY),
            "other": {"priority": PRIORITY + 1, "lastseen": (NOW - timedelta(seconds=59)).isoformat()},
        },
        Role.STANDBY,
        RoleReason.OUTRANKED,
        ("other",),
        1,
    ),
    (
        "a record without priority has kopf's default 0",
        {ME: record(PRIORITY), "other": {"lifetime": 30, "lastseen": NOW.isoformat()}},
        Role.ACTIVE,
        RoleReason.HIGHEST_PRIORITY,
        (),
        30,
    ),
    (
        "malformed records are ignored",
        {ME: record(PRIORITY), "x": "junk", "y": {"priority": "high"}, "z": {"lastseen": "yesterday"}},
        Role.ACTIVE,
        RoleReason.HIGHEST_PRIORITY,
        (),
        30,
    ),
]


@pytest.mark.parametrize(
    ("status", "role", "reason", "blockers", "recheck"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide_role(
    status: dict[str, Any] | None,
    role: Role,
    reason: RoleReason,
    blockers: tuple[str, ...],
    recheck: float | None,
) -> None:
    verdict = decide_role(status, identity=ME, priority=PRIORITY, now=NOW)
    expected_recheck = None if recheck is None else NOW + timedelta(seconds=recheck)
    assert verdict == RoleVerdict(role, reason, blockers, expected_recheck)
    assert verdict.active is (role is Role.ACTIVE)


def test_no_peering_object_means_standby() -> None:
    verdict = decide_role(None, identity=ME, priority=PRIORITY, now=NOW, exists=False)
    assert verdict == RoleVerdict(Role.STANDBY, RoleReason.NO_PEERING_OBJECT)


@pytest.mark.parametrize("offset_hours", [0, 2, -5])
def test_lastseen_in_any_timezone(offset_hours: int) -> None:
    zone = timezone(timedelta(hours=offset_hours))
    seen = (NOW - timedelta(seconds=10)).astimezone(zone).isoformat()
    status = {ME: record(PRIORITY), "other": {"priority": PRIORITY + 1, "lifetime": 30, "lastseen": seen}}
    verdict = decide_role(status, identity=ME, priority=PRIORITY, now=NOW)
    assert verdict.recheck_at == NOW + timedelta(seconds=20)


def test_naive_lastseen_is_utc() -> None:
    (peer,) = parse_peers({"p": {"priority": 1, "lifetime": 5, "lastseen": "2026-01-01T11:59:58"}}, NOW)
    assert peer.alive(NOW)
    assert peer.deadline == NOW + timedelta(seconds=3)


def test_kopf_lastseen_format_parses() -> None:
    # kopf writes datetime.isoformat() of an aware UTC time, microseconds included.
    (peer,) = parse_peers(
        {"p": {"priority": 1, "lifetime": 60, "lastseen": "2026-01-01T11:59:30.123456+00:00"}}, NOW
    )
    assert peer.lastseen == datetime(2026, 1, 1, 11, 59, 30, 123456, tzinfo=UTC)


@pytest.mark.parametrize("seconds", [0, 1, 29, 30, 31, 60])
def test_expiry_mirrors_kopf(seconds: int) -> None:
    """kopf: dead when `lastseen + lifetime <= now`; the higher peer blocks exactly while alive."""
    status = {ME: record(PRIORITY, seen_ago=0, lifetime=120), "other": record(PRIORITY + 1, seen_ago=seconds)}
    verdict = decide_role(status, identity=ME, priority=PRIORITY, now=NOW)
    assert verdict.active is (seconds >= 30)


LABEL = "workerfleet.dev/active"
MARKED = {LABEL: "true", "app.kubernetes.io/instance": "wf"}


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        pytest.param({}, [], id="no labelled pod"),
        pytest.param({"me": MARKED}, [], id="only our own pod"),
        pytest.param({"me": MARKED, "dead": MARKED}, ["dead"], id="a killed replica's pod"),
        pytest.param({"dead": MARKED}, ["dead"], id="our own not labelled yet"),
        pytest.param({"me": MARKED, "b": MARKED, "a": MARKED}, ["a", "b"], id="several, in name order"),
        pytest.param({"me": MARKED, "other": {LABEL: "false"}}, ["other"], id="any value of the label"),
        pytest.param({"me": MARKED, "other": {"app.kubernetes.io/instance": "wf"}}, [], id="unlabelled"),
    ],
)
def test_pods_to_unmark(pods: dict[str, dict[str, str]], expected: list[str]) -> None:
    assert pods_to_unmark("me", pods, LABEL) == expected
