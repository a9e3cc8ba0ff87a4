"""Certificates and keys for the local control plane, written once per cluster state directory."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
FRONT_PROXY_CLIENT = "front-proxy-client"
BENCH_OPERATOR_USER = "workerfleet-operator"
REAL_NODE_NAME = "real-node-0"
"""The identity OperatorProcess runs as by default (system:masters), for benchmarks."""

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, on disk."""

    cert: Path
    key: Path


def _write_key(path: Path, key: Key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


class Authority:
    """A certificate authority that signs serving and client certificates."""

    def __init__(self, directory: Path, name: str) -> None:
        self.pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
        self.directory = directory
        if self.pair.cert.exists() and self.pair.key.exists():
            loaded = serialization.load_pem_private_key(self.pair.key.read_bytes(), password=None)
            assert isinstance(loaded, ec.EllipticCurvePrivateKey)
            self._key = loaded
            self._cert = x509.load_pem_x509_certificate(self.pair.cert.read_bytes())
            return
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(name)
        self._cert = (
            _builder(subject, subject, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        _write_key(self.pair.key, self._key)
        self.pair.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        file_name: str,
        common_name: str,
        *,
        organization: str | None = None,
        server_names: tuple[str, ...] = (),
        server_ips: tuple[str, ...] = (),
    ) -> Pair:
        """Issue a client certificate, or a serving one when names or addresses are given."""
        pair = Pair(self.directory / f"{file_name}.crt", self.directory / f"{file_name}.key")
        if pair.cert.exists() and pair.key.exists():
            return pair
        key = ec.generate_private_key(ec.SECP256R1())
        serving = bool(server_names or server_ips)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if serving else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            _builder(_name(common_name, organization), self._cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        if serving:
            alternative_names: list[x509.GeneralName] = [x509.DNSName(name) for name in server_names]
            alternative_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        _write_key(pair.key, key)
        pair.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return pair


@dataclass(frozen=True)
class ClusterPki:
    ca: Pair
    apiserver: Pair
    admin: Pair
    controller_manager: Pair
    scheduler: Pair
    kwok: Pair
    operator: Pair
    real_node: Pair
    front_proxy_ca: Pair
    front_proxy_client: Pair
    service_account_key: Path
    service_account_public_key: Path


def ensure_pki(directory: Path) -> ClusterPki:
    """Create (or reuse) every certificate and key the control plane needs."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = Authority(directory, "ca")
    front_proxy = Authority(directory, "front-proxy-ca")
    service_account_key = directory / "service-account.key"
    service_account_public_key = directory / "service-account.pub"
    if not service_account_key.exists():
        signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(service_account_key, signing_key)
        service_account_public_key.write_bytes(
            signing_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return ClusterPki(
        ca=ca.pair,
        apiserver=ca.issue(
            "apiserver",
            "kube-apiserver",
            server_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            server_ips=("127.0.0.1", KUBERNETES_SERVICE_IP),
        ),
        admin=ca.issue("admin", "workerfleet-admin", organization="system:masters"),
        controller_manager=ca.issue("controller-manager", "system:kube-controller-manager"),
        scheduler=ca.issue("scheduler", "system:kube-scheduler"),
        # kwok plays every node's kubelet at once, so no single node identity fits it.
        kwok=ca.issue("kwok", "kwok-controller", organization="system:masters"),
        # The operator under test, as a user of its own so the audit log tells its writes apart.
        operator=ca.issue("operator", BENCH_OPERATOR_USER, organization="system:masters"),
        # The real node's kubelet, in the Node authorizer's group: it may touch only its own node and pods.
        real_node=ca.issue("real-node", f"system:node:{REAL_NODE_NAME}", organization="system:nodes"),
        front_proxy_ca=front_proxy.pair,
        front_proxy_client=front_proxy.issue("front-proxy-client", FRONT_PROXY_CLIENT),
        service_account_key=service_account_key,
        service_account_public_key=service_account_public_key,
    )
