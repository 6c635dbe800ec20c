"""Certificates a scenario makes when it runs (nothing secret is kept in the project): a CA, servers, clients.

As the istio.io Secure Gateways task makes them with openssl: a root for
example.com, a server certificate for the gateway's host, and a client
certificate for MUTUAL.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshy.local.identity import cert_pem, key_pem, new_key, now
from meshy.local.paths import write_private

LIFETIME = datetime.timedelta(days=2)


@dataclass(frozen=True)
class Issued:
    """PEM text of a certificate and its key."""

    cert: str
    key: str


class Authority:
    """A throwaway CA."""

    def __init__(self, name: str, lifetime: datetime.timedelta = LIFETIME) -> None:
        self.lifetime = lifetime
        self.key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now() - datetime.timedelta(minutes=5))
            .not_valid_after(now() + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return cert_pem(self.cert).decode()

    def issue(self, name: str, client: bool = False) -> Issued:
        """A leaf certificate for `name` (its DNS SAN), for a server or (client=True) a client."""
        key = new_key()
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now() - datetime.timedelta(minutes=5))
            .not_valid_after(now() + self.lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Issued(cert_pem(cert).decode(), key_pem(key).decode())


def b64(text: str) -> str:
    """A Secret's data value."""
    return base64.b64encode(text.encode()).decode()


# The external HTTPS service's files, made when its mesh or cluster starts: its CA, certificate and key,
# and a CA that signed nothing here (tls-origination trusts one or the other).
EXTERNAL_FILES = ("ca.crt", "tls.crt", "tls.key", "other-ca.crt")
EXTERNAL_LIFETIME = datetime.timedelta(days=365)


def lasts(path: Path, margin: datetime.timedelta = datetime.timedelta(days=1)) -> bool:
    """Whether the PEM certificate at path is still valid `margin` from now (False when unreadable)."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc > now() + margin


def external_credentials(directory: Path, host: str) -> Path:
    """A CA and a server certificate for `host` in `directory` (kept while all files are there and the
    certificate has a day left), owner-only."""
    if all((directory / name).is_file() for name in EXTERNAL_FILES) and lasts(directory / "tls.crt"):
        return directory
    authority = Authority(f"{host} CA", EXTERNAL_LIFETIME)
    server = authority.issue(host)
    other = Authority(f"not {host}'s CA", EXTERNAL_LIFETIME)
    for name, text in zip(EXTERNAL_FILES, (authority.pem, server.cert, server.key, other.pem), strict=True):
        # Owner-only from the start, written aside and renamed: never a readable or half-written key.
        write_private(directory / name, text)
    return directory
