"""TLS to a queue server, as `spec.queue.<backend>.tls` asks: the CA it names (else the system's), and the
server certificate checked against `serverName` (else the address's host). The worker runtime and the
operator's depth sources both connect through here, so both verify the same way.

`serverName` works whatever the client library does with the host it dials: the context itself puts
the name into the handshake (SNI) and verifies the certificate against it.
"""

from __future__ import annotations

import ssl
from typing import Any

from redis.asyncio import Connection


class _NamedContext(ssl.SSLContext):
    """A client context that verifies (and sends as SNI) a fixed server name, not the dialled host."""

    server_name: str

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        kwargs["server_hostname"] = self.server_name
        return super().wrap_bio(*args, **kwargs)


def client_context(ca_pem: str | None, server_name: str | None) -> ssl.SSLContext:
    """Verify the server against `ca_pem` (the system's CAs when None) and `server_name` (the dialled
    host when None). Verification is never turned off."""
    context = (
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if server_name is None
        else _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    )
    if isinstance(context, _NamedContext):
        context.server_name = server_name or ""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_pem is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.load_verify_locations(cadata=ca_pem)
    return context


class RedisTLSConnection(Connection):
    """A redis-py asyncio connection over TLS with a context of ours (redis-py's own SSL connection
    builds its context from file paths and cannot verify a name other than the host it dials)."""

    def __init__(self, *, tls_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tls_context = tls_context

    def _connection_arguments(self) -> Any:
        return {**super()._connection_arguments(), "ssl": self._tls_context}


def tls_problem(error: BaseException) -> str | None:
    """The TLS failure behind `error` (it or what it wraps), in the local TLS library's words, which
    carry no text from the server: e.g. "TLS: certificate verify failed: unable to get local issuer
    certificate". None when TLS was not the problem."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"TLS: certificate verify failed: {current.verify_message}"
        if isinstance(current, ssl.SSLError):
            return f"TLS: {current.reason or type(current).__name__}"
        current = current.__cause__ or current.__context__
    return None
