"""The metrics API's serving certificate: loaded again when its files change, or self-signed for
clusters that provide none."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import ssl
from pathlib import Path

logger = logging.getLogger(__name__)

VALIDITY = datetime.timedelta(days=365)
RELOAD_INTERVAL_SECONDS = 10.0
"""How often the files are read: a renewed Secret reaches the pod's volume within about a minute anyway."""


class ReloadingCertificate:
    """A serving certificate read from files into a live SSL context.

    cert-manager or a `helm upgrade` renews the Secret and the kubelet replaces the mounted files;
    loading them into the same context serves the new certificate to every new connection, with no
    restart and no dropped connection. A pair that does not load (a certificate whose key has not
    arrived yet) is not loaded: the one in use stays, and the next check tries again.
    """

    def __init__(self, context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
        self._context = context
        self._files = (Path(cert_file), Path(key_file))
        self._loaded = self._read()

    def _read(self) -> tuple[bytes, bytes] | None:
        try:
            return self._files[0].read_bytes(), self._files[1].read_bytes()
        except OSError:
            return None

    def reload_if_changed(self) -> bool:
        """Load the files if they differ from what is served and form a valid pair; whether it did."""
        found = self._read()
        if found is None or found == self._loaded:
            return False
        cert_file, key_file = (str(file) for file in self._files)
        try:
            # A trial context first: a failed load can leave a context with a certificate and no key.
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
            self._context.load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, OSError) as error:
            logger.warning(
                "serving certificate %s not reloaded (%s); keeping the one in use", cert_file, error
            )
            return False
        self._loaded = found
        logger.info("serving certificate %s reloaded", cert_file)
        return True


async def watch(certificate: ReloadingCertificate, interval: float = RELOAD_INTERVAL_SECONDS) -> None:
    """Check the certificate's files every `interval` until cancelled."""
    while True:
        await asyncio.sleep(interval)
        certificate.reload_if_changed()


def write_self_signed(directory: Path, dns_names: list[str], ip_addresses: list[str]) -> tuple[Path, Path]:
    """Write cert and key files; the APIService must then skip TLS verification or carry this cert."""
    # Imported here: `cryptography` is 9 MiB of the operator's memory, needed only without a certificate.
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0] if dns_names else "workerfleet")])
    now = datetime.datetime.now(datetime.UTC)
    alternative: list[x509.GeneralName] = [x509.DNSName(dns) for dns in dns_names]
    alternative += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file
