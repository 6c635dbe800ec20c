"""Workload identity: the mesh's certificate authority and one SPIFFE certificate per service account.

Istio's istiod signs a certificate per workload whose only subject alternative
name is the URI spiffe://<trust domain>/ns/<namespace>/sa/<service account>
(pkg/spiffe/spiffe.go at 1.30.3); the sidecar receives it with the root
certificate over SDS, as the resources named "default" and "ROOTCA"
(pilot/pkg/model/... sec_model.SDSDefaultResourceName / SDSRootResourceName).
Here the CA lives in the state directory, owner-only, and the secrets reach
each Envoy over the same ADS stream as its configuration (see the README's
"Security" section for why not watched files).
"""

from __future__ import annotations

import datetime
import functools
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshy.local.paths import write_private
from meshy.local.spiffe import TRUST_DOMAIN, spiffe_id

# Istio issues workload certificates for 24 h and its agent rotates them; nothing
# rotates them here between applies, so they last 30 days and an apply renews
# any past half of that.
WORKLOAD_LIFETIME = datetime.timedelta(days=30)
CA_LIFETIME = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class KeyPair:
    """PEM text of a certificate chain and its private key."""

    chain: str
    key: str


def new_key() -> ec.EllipticCurvePrivateKey:
    # Istio's default workload key is ECDSA P-256 when ECC is asked for, RSA 2048 otherwise;
    # P-256 is quicker to make, which matters for a mesh of many service accounts.
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class MeshCA:
    """The mesh's root of trust in `directory` (0700), made on first use, and the workload certificates it signs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cache: dict[str, KeyPair] = {}
        self.loaded_root: tuple[ec.EllipticCurvePrivateKey, bytes] | None = None

    @property
    def root_pem(self) -> str:
        return self.root()[1].decode()

    def root(self) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        if self.loaded_root is None:
            self.loaded_root = self.load_root()
        return self.loaded_root

    def load_root(self) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        key_path, cert_path = self.directory / "ca-key.pem", self.directory / "ca-cert.pem"
        if not cert_path.exists():
            key = new_key()
            name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN)])
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now() - datetime.timedelta(minutes=5))
                .not_valid_after(now() + CA_LIFETIME)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
                )
                .sign(key, hashes.SHA256())
            )
            # write_private makes the directory owner-only (0700) too.
            write_private(key_path, key_pem(key).decode())
            write_private(cert_path, cert_pem(cert).decode())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, cert_path.read_bytes()

    def workload(self, identity: str) -> KeyPair:
        """The certificate for a SPIFFE id, issued once and kept until past half its life."""
        if identity in self.cache:
            return self.cache[identity]
        path = self.directory / "workloads" / (re.sub(r"[^A-Za-z0-9.-]+", "_", identity.split("//", 1)[1]) + ".pem")
        if path.exists():
            text = path.read_text()
            cert = x509.load_pem_x509_certificate(text.encode())
            if cert.not_valid_after_utc - now() > WORKLOAD_LIFETIME / 2:
                chain, _, key = text.partition("-----BEGIN PRIVATE KEY-----")
                pair = KeyPair(chain, "-----BEGIN PRIVATE KEY-----" + key)
                self.cache[identity] = pair
                return pair
        pair = self.issue(identity)
        write_private(path, pair.chain + pair.key)
        self.cache[identity] = pair
        return pair

    def issue(self, identity: str) -> KeyPair:
        ca_key, ca_cert_pem = self.root()
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        key = new_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now() - datetime.timedelta(minutes=5))
            .not_valid_after(now() + WORKLOAD_LIFETIME)
            # Istio's workload certificates: the SPIFFE URI as the only, critical SAN (empty subject).
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return KeyPair((cert_pem(cert) + ca_cert_pem).decode(), key_pem(key).decode())


@functools.cache
def throwaway_identity() -> tuple[KeyPair, str]:
    """A certificate and root made once per process, never stored: for checks that need valid PEM only."""
    with tempfile.TemporaryDirectory() as directory:
        ca = MeshCA(Path(directory))
        return ca.workload(spiffe_id("default", "default")), ca.root_pem
