"""Credentials for a queue server or Prometheus: one type for the operator's depth sources and
analysis, the worker runtime and the producer."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Credentials:
    """Secrets resolved from the pool's Secret references (operator) or the worker's environment;
    repr never shows them."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    ca_pem: str | None = None
    """PEM bundle of the CAs to trust for TLS (not a secret: certificates only)."""
