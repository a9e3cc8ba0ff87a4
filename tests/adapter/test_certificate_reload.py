"""The metrics API serves a renewed certificate without a restart: real files, a real TLS server on
loopback, real handshakes."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from workerfleet.adapter.certificates import ReloadingCertificate, watch
from workerfleet.adapter.readings import Readings
from workerfleet.adapter.server import FrontProxy, FrontProxyTrust, build_app, serve, server_tls

HANDSHAKE_TIMEOUT = 10.0


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class Authority:
    """A CA that issues serving certificates for localhost."""

    def __init__(self, name: str = "test-ca") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self) -> tuple[bytes, bytes, bytes]:
        """PEM certificate, PEM key, and the certificate's DER (what a client sees)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name("localhost"))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return (
            certificate.public_bytes(serialization.Encoding.PEM),
            key_pem,
            certificate.public_bytes(serialization.Encoding.DER),
        )


def _write(directory: Path, issued: tuple[bytes, bytes, bytes]) -> None:
    """As the kubelet updates a Secret volume: both files replaced, each in one rename."""
    for name, content in (("tls.crt", issued[0]), ("tls.key", issued[1])):
        staged = directory / f".{name}.new"
        staged.write_bytes(content)
        staged.replace(directory / name)


async def _presented(port: int, ca_pem: str) -> bytes:
    """The certificate the server presents in a fresh, verified handshake."""
    client = ssl.create_default_context(cadata=ca_pem)
    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost"), HANDSHAKE_TIMEOUT
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert isinstance(der, bytes)
        return der
    finally:
        writer.close()


async def _denied(*_: object) -> bool:
    return False


@dataclass
class Server:
    runner: web.AppRunner
    port: int
    certificate: ReloadingCertificate
    front_proxy: FrontProxy


async def _start(directory: Path, ca: Authority, front_proxy_ca: Authority | None = None) -> Server:
    cert_file, key_file = str(directory / "tls.crt"), str(directory / "tls.key")
    trust = FrontProxyTrust(client_ca_pem=(front_proxy_ca or ca).pem, allowed_names=frozenset())
    tls = server_tls(cert_file, key_file, trust)
    front_proxy = FrontProxy(trust, tls)
    runner = await serve(build_app(Readings(), front_proxy, _denied), "127.0.0.1", 0, tls)
    [address] = runner.addresses
    return Server(runner, int(address[1]), ReloadingCertificate(tls, cert_file, key_file), front_proxy)


async def _server(directory: Path, ca: Authority) -> tuple[web.AppRunner, int, ReloadingCertificate]:
    server = await _start(directory, ca)
    return server.runner, server.port, server.certificate


def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(tmp_path: Path) -> None:
    ca = Authority()
    first, second = ca.issue(), ca.issue()

    async def scenario() -> None:
        # Given the metrics API serving the first certificate, watching its files
        _write(tmp_path, first)
        runner, port, certificate = await _server(tmp_path, ca)
        watcher = asyncio.create_task(watch(certificate, interval=0.05))
        try:
            assert await _presented(port, ca.pem) == first[2]
            # When the files are replaced with a renewed certificate
            _write(tmp_path, second)
            # Then new connections get it, within a few intervals
            started, deadline = time.monotonic(), time.monotonic() + 5
            while await _presented(port, ca.pem) != second[2]:
                assert time.monotonic() < deadline, "the renewed certificate was never served"
                await asyncio.sleep(0.05)
            print(f"renewed certificate served after {time.monotonic() - started:.2f}s")
        finally:
            watcher.cancel()
            await runner.cleanup()

    asyncio.run(scenario())


def test_a_half_written_certificate_keeps_the_one_in_use(tmp_path: Path) -> None:
    ca = Authority()
    first, second = ca.issue(), ca.issue()

    async def scenario() -> None:
        _write(tmp_path, first)
        runner, port, certificate = await _server(tmp_path, ca)
        try:
            # Given unchanged files: nothing is loaded
            assert certificate.reload_if_changed() is False
            # When the certificate is new but the key is still the old one
            (tmp_path / "tls.crt").write_bytes(second[0])
            # Then it is not loaded, and the server still completes handshakes with the old one
            assert certificate.reload_if_changed() is False
            assert await _presented(port, ca.pem) == first[2]
            # When the key follows, the pair is loaded
            (tmp_path / "tls.key").write_bytes(second[1])
            assert certificate.reload_if_changed() is True
            assert await _presented(port, ca.pem) == second[2]
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


async def _discovery_status(
    port: int, ca_pem: str, client: tuple[bytes, bytes, bytes], directory: Path
) -> int | None:
    """Discovery as the aggregator asks for it, with a client certificate; None when refused at TLS."""
    (directory / "client.crt").write_bytes(client[0])
    (directory / "client.key").write_bytes(client[1])
    context = ssl.create_default_context(cadata=ca_pem)
    context.load_cert_chain(str(directory / "client.crt"), str(directory / "client.key"))
    url = f"https://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1"
    timeout = aiohttp.ClientTimeout(total=HANDSHAKE_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.get(url, ssl=context, headers={"X-Remote-User": "system:hpa"}) as response:
                return response.status
        except aiohttp.ClientError:
            return None


def test_a_rotated_front_proxy_ca_is_trusted_without_a_restart(tmp_path: Path) -> None:
    serving_ca, old_proxy_ca, new_proxy_ca = Authority("serving"), Authority("proxy-1"), Authority("proxy-2")
    old_client, new_client = old_proxy_ca.issue(), new_proxy_ca.issue()

    async def scenario() -> None:
        # Given the metrics API trusting the aggregator's current client CA
        _write(tmp_path, serving_ca.issue())
        server = await _start(tmp_path, serving_ca, old_proxy_ca)
        try:
            assert await _discovery_status(server.port, serving_ca.pem, old_client, tmp_path) == 200
            # and refusing a client certificate of a CA it does not know
            assert await _discovery_status(server.port, serving_ca.pem, new_client, tmp_path) is None
            # When the API server publishes a new front-proxy CA
            assert server.front_proxy.update(FrontProxyTrust(new_proxy_ca.pem, frozenset())) is True
            assert server.front_proxy.update(FrontProxyTrust(new_proxy_ca.pem, frozenset())) is False
            # Then the aggregator's renewed certificate is accepted at the next handshake
            assert await _discovery_status(server.port, serving_ca.pem, new_client, tmp_path) == 200
        finally:
            await server.runner.cleanup()

    asyncio.run(scenario())
