"""The queue backends, one module each behind `base.QueueKind`, and their registry.

Adding a backend: its model and its field of `Queue` (api/workerpool.py), its kind module here and
its entry in `KINDS`, its depth source in `backends/sources.py` and its consumer in
`worker/backend_factory.py` (tests check that every kind has both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workerfleet.api.queue_kinds import prometheus, rabbitmq, redis_list, redis_stream
from workerfleet.api.queue_kinds.base import QueueKind

if TYPE_CHECKING:
    from workerfleet.api.workerpool import Queue

KINDS: tuple[QueueKind[Any], ...] = (redis_list.KIND, redis_stream.KIND, rabbitmq.KIND, prometheus.KIND)
"""Every backend, in the order the API lists them."""


def kind_of(queue: Queue) -> tuple[QueueKind[Any], Any]:
    """The backend the queue names, and its settings (the value of its field)."""
    for kind in KINDS:
        spec = getattr(queue, kind.field)
        if spec is not None:
            return kind, spec
    raise ValueError("the queue names no backend")  # the CRD's CEL rule makes this unreachable


def spoken_list(words: list[str]) -> str:
    """`a, b or c`."""
    return " or ".join(filter(None, (", ".join(words[:-1]), words[-1])))
