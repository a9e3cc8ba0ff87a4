"""Which operator replica is active: a pure reading of the kopf peering object's status.

Every replica records itself in the status of a (Cluster)KopfPeering object as
`{identity: {priority, lifetime, lastseen}}` and refreshes that record well within its lifetime.
kopf pauses a replica's own event handling while a live peer has a higher priority, and pauses all
replicas whose live peers share their priority. The operator's own tasks (queue pollers, rollout
clocks, the metrics API) are not kopf handlers, so they follow the same rule, decided here:

- a record is dead once `lastseen + lifetime <= now` (a crashed replica stops counting after its
  lifetime; a replica that stops gracefully removes its record at once);
- a replica is active only while its own record is present and alive (so its peers' kopf has seen
  it and pauses for it, and it steps down when kopf removes the record at shutdown),
- and no other live record has a higher or the same priority.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_LIFETIME_SECONDS = 60
"""kopf's default peer lifetime, used for records that name none."""


class Role(enum.StrEnum):
    ACTIVE = "active"
    STANDBY = "standby"


class RoleReason(enum.StrEnum):
    HIGHEST_PRIORITY = "HighestPriority"
    NOT_REGISTERED = "NotRegistered"
    """Our own record is missing or expired: kopf has not (or no longer) announced this replica."""
    OUTRANKED = "Outranked"
    PRIORITY_COLLISION = "PriorityCollision"
    """A live peer has our priority: kopf pauses both, so neither may act."""
    NO_PEERING_OBJECT = "NoPeeringObject"


@dataclass(frozen=True)
class PeerRecord:
    identity: str
    priority: int
    lifetime: timedelta
    lastseen: datetime

    @property
    def deadline(self) -> datetime:
        return self.lastseen + self.lifetime

    def alive(self, now: datetime) -> bool:
        return self.deadline > now


@dataclass(frozen=True)
class RoleVerdict:
    role: Role
    reason: RoleReason
    blockers: tuple[str, ...] = ()
    """Identities of the live peers that keep this replica standby."""
    recheck_at: datetime | None = None
    """When the verdict can change without any write: the earliest expiry of a record that matters."""

    @property
    def active(self) -> bool:
        return self.role is Role.ACTIVE


def parse_peers(status: Mapping[str, Any] | None, now: datetime) -> list[PeerRecord]:
    """The records in a peering object's status; malformed entries are skipped (kopf would fail on them).

    A record without `lastseen` counts as seen now, as kopf counts it.
    """
    peers = []
    for identity, record in (status or {}).items():
        if not isinstance(record, Mapping):
            continue
        try:
            priority = int(record.get("priority", 0))
            lifetime = timedelta(seconds=int(record.get("lifetime", DEFAULT_LIFETIME_SECONDS)))
            raw_lastseen = record.get("lastseen")
            lastseen = now if raw_lastseen is None else datetime.fromisoformat(str(raw_lastseen))
        except (TypeError, ValueError):
            continue
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=UTC)
        peers.append(PeerRecord(str(identity), priority, lifetime, lastseen))
    return peers


def decide_role(
    status: Mapping[str, Any] | None, *, identity: str, priority: int, now: datetime, exists: bool = True
) -> RoleVerdict:
    """Active or standby, for the replica `identity` with `priority`, given the peering object's status.

    `exists=False`: the peering object is missing. kopf then pauses nobody, so every replica would
    act; rather than run twice, stay standby until the object is there.
    """
    if not exists:
        return RoleVerdict(Role.STANDBY, RoleReason.NO_PEERING_OBJECT)
    peers = parse_peers(status, now)
    own = next((peer for peer in peers if peer.identity == identity), None)
    live_others = [peer for peer in peers if peer.identity != identity and peer.alive(now)]
    outranking = sorted(peer.identity for peer in live_others if peer.priority > priority)
    same = sorted(peer.identity for peer in live_others if peer.priority == priority)
    deadlines = [
        peer.deadline for peer in live_others if peer.priority >= priority
    ]  # when one of them expires, we may take over
    recheck_at = min(deadlines, default=None)
    if outranking:
        return RoleVerdict(Role.STANDBY, RoleReason.OUTRANKED, tuple(outranking), recheck_at)
    if same:
        return RoleVerdict(Role.STANDBY, RoleReason.PRIORITY_COLLISION, tuple(same), recheck_at)
    if own is None or not own.alive(now):
        return RoleVerdict(Role.STANDBY, RoleReason.NOT_REGISTERED)
    return RoleVerdict(Role.ACTIVE, RoleReason.HIGHEST_PRIORITY, (), own.deadline)


def pods_to_unmark(own: str, marked: Mapping[str, Mapping[str, str]], label: str) -> list[str]:
    """The pods the active replica takes `label` off: every pod of its release but its own that has it.

    `marked` maps pod names to their labels (the release's pods that carry `label`, as listed). A
    replica that was SIGKILLed, froze or lost its node cannot take its own label off, and the Service
    would go on routing to its pod next to the new active one's.
    """
    return sorted(name for name, labels in marked.items() if name != own and label in labels)
