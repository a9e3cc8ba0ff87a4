"""Types both kinds use: names, addresses, Secret references, TLS, and Prometheus endpoints."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import Field

from workerfleet.api.base import ApiModel, Rule

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_SUBDOMAIN_MAX_LENGTH = 253
HOST_PORT_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):[0-9]{1,5}$"
HTTP_URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
ADDRESS_MAX_LENGTH = 255
URL_MAX_LENGTH = 2048
QUEUE_NAME_MAX_LENGTH = 255
MESSAGE_MAX_LENGTH = 1024
MIN_PORT, MAX_PORT = 1, 65_535

ObjectName = Annotated[
    str, Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX_LENGTH, pattern=DNS_SUBDOMAIN_PATTERN)
]
"""The name of a Kubernetes object in the same namespace (a DNS subdomain)."""


PORT_NUMBER_PATTERN = (
    r"0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
"""A number from 1 to 65535 (leading zeros allowed, as a number's text may have them)."""
_HOST_PORT_IN_RANGE = f":{PORT_NUMBER_PATTERN}$"
_URL_WITH_PORT = r"^https?://[^/?#]*:[0-9]*([/?#]|$)"
_URL_PORT_IN_RANGE = rf"^https?://[^/?#]*:{PORT_NUMBER_PATTERN}([/?#]|$)"


def _host_port_in_range(address: str) -> bool:
    return re.search(_HOST_PORT_IN_RANGE, address) is not None


def _url_port_in_range(url: str) -> bool:
    return re.search(_URL_WITH_PORT, url) is None or re.search(_URL_PORT_IN_RANGE, url) is not None


HostPort = Annotated[
    str,
    Field(min_length=1, max_length=ADDRESS_MAX_LENGTH, pattern=HOST_PORT_PATTERN),
    Rule(
        # A regular expression, not int(): CEL and Python then read the number the same way.
        cel=f"self.matches('{_HOST_PORT_IN_RANGE}')",
        message=f"the port must be between {MIN_PORT} and {MAX_PORT}, e.g. redis:6379 or rabbitmq:5672",
        holds=_host_port_in_range,
    ),
]
"""`host:port`, where host is a DNS name, an IPv4 address or a bracketed IPv6 address."""


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` into its parts, for the clients that connect to it."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"queue address must be host:port, not {address!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


HttpUrl = Annotated[
    str,
    Field(min_length=1, max_length=URL_MAX_LENGTH, pattern=HTTP_URL_PATTERN),
    Rule(
        cel=f"!self.matches('{_URL_WITH_PORT}') || self.matches('{_URL_PORT_IN_RANGE}')",
        message=f"the port must be between {MIN_PORT} and {MAX_PORT}, e.g. http://prometheus:9090",
        holds=_url_port_in_range,
    ),
]
"""An http:// or https:// URL."""

QueueName = Annotated[str, Field(min_length=1, max_length=QUEUE_NAME_MAX_LENGTH)]
"""The name of a queue, list, stream or key on the pool's queue backend."""


class SecretKeySelector(ApiModel):
    """A key of a Secret in the same namespace; credentials are referenced, never written inline."""

    name: ObjectName
    """Name of the Secret."""
    key: Annotated[
        str, Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX_LENGTH, pattern=r"^[-._a-zA-Z0-9]+$")
    ]
    """Key within the Secret's data whose value is used."""


class TLSConfig(ApiModel):
    """Connect over TLS. An empty object enables TLS with the system's trusted certificate authorities."""

    ca_secret_ref: SecretKeySelector | None = None
    """PEM bundle of certificate authorities to trust instead of the system's."""
    server_name: Annotated[str, Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX_LENGTH)] | None = None
    """Name to verify the server's certificate against, when it differs from the address's host."""


class PrometheusServer(ApiModel):
    """A Prometheus HTTP API endpoint."""

    address: HttpUrl
    """Base URL of the Prometheus server, e.g. http://prometheus.monitoring:9090."""
    bearer_token_secret_ref: SecretKeySelector | None = None
    """Bearer token sent with every query, for a Prometheus behind an authenticating proxy."""
    tls: TLSConfig | None = None
    """TLS settings for an https:// address."""

    validations: ClassVar[tuple[Rule[PrometheusServer], ...]] = (
        Rule(
            cel="!has(self.bearerTokenSecretRef) || self.address.startsWith('https://')",
            message="a bearer token is sent only over https: make the address https://,"
            " or drop bearerTokenSecretRef",
            holds=lambda server: (
                server.bearer_token_secret_ref is None or server.address.startswith("https://")
            ),
            field_path=".address",
        ),
    )
