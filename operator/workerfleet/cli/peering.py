"""How an operator replica names itself among its peers: shared by the command line and the operator."""

from __future__ import annotations

import os
import secrets
import socket

PRIORITY_RANGE = 2**31 - 1
"""Random priorities are drawn from 1..2^31-1: two replicas collide with probability ~5e-10."""


def random_priority() -> int:
    """A priority no other replica is likely to have: kopf pauses every replica sharing the top one."""
    return 1 + secrets.randbelow(PRIORITY_RANGE)


def default_identity() -> str:
    """The pod's name inside a pod (the chart sets POD_NAME), else host, process and a random suffix."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
