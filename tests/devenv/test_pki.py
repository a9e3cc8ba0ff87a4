"""The local control plane's certificates chain to their CA and carry the identities RBAC expects."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devenv import pki


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _verify(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    public_key = issuer.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(issuer)


def test_serving_certificate_names_loopback_and_the_kubernetes_service(tmp_path: Path) -> None:
    certs = pki.ensure_pki(tmp_path)
    serving = _load(certs.apiserver.cert)
    _verify(serving, _load(certs.ca.cert))
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address(pki.KUBERNETES_SERVICE_IP) in names.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc" in names.get_values_for_type(x509.DNSName)
    usage = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage


def test_client_identities(tmp_path: Path) -> None:
    certs = pki.ensure_pki(tmp_path)
    ca = _load(certs.ca.cert)

    def subject(pair: pki.Pair, oid: x509.ObjectIdentifier) -> list[str]:
        cert = _load(pair.cert)
        _verify(cert, ca)
        return [str(attribute.value) for attribute in cert.subject.get_attributes_for_oid(oid)]

    assert subject(certs.admin, NameOID.ORGANIZATION_NAME) == ["system:masters"]
    assert subject(certs.controller_manager, NameOID.COMMON_NAME) == ["system:kube-controller-manager"]
    assert subject(certs.scheduler, NameOID.COMMON_NAME) == ["system:kube-scheduler"]


def test_front_proxy_client_is_signed_by_its_own_authority(tmp_path: Path) -> None:
    certs = pki.ensure_pki(tmp_path)
    client = _load(certs.front_proxy_client.cert)
    _verify(client, _load(certs.front_proxy_ca.cert))
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == pki.FRONT_PROXY_CLIENT
    assert client.issuer != _load(certs.ca.cert).subject


def test_ensure_pki_reuses_what_exists_and_keeps_keys_private(tmp_path: Path) -> None:
    first = pki.ensure_pki(tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    second = pki.ensure_pki(tmp_path)
    assert first == second
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    for key in tmp_path.glob("*.key"):
        assert key.stat().st_mode & 0o077 == 0
