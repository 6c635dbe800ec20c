"""Kubernetes Secrets as Istio's gateways read them: a server certificate and key, and a CA for client certificates.

Which keys are read, in which order, follows istio/istio 1.30.3
pilot/pkg/credentials/kube/secrets.go (ExtractCertInfo: `cert`/`key` before
`tls.crt`/`tls.key`; ExtractRoot: `cacert` before `ca.crt`; GetCaCert: the
Secret `<credentialName>-cacert` first, then the credential's own Secret); 1.8.6
reads the same keys in the same order (pilot/pkg/secrets/kube/secrets.go).
The API server's own rule for type kubernetes.io/tls (both tls.crt and
tls.key present) is k8s.io/kubernetes pkg/apis/core/validation ValidateSecret.
A Secret's content is checked when it is applied, so a gateway never gets a
certificate Envoy would refuse: PEM that parses, and a key that belongs to
the certificate.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

CERT_KEYS = (("cert", "key"), ("tls.crt", "tls.key"))
CA_KEYS = ("cacert", "ca.crt")
CA_SUFFIX = "-cacert"  # Istio's SdsCaSuffix
TLS_TYPE = "kubernetes.io/tls"


class CredentialError(ValueError):
    """A credentialName that names no usable Secret; the caller words the refusal."""


@dataclass(frozen=True)
class ServerCredential:
    """PEM text of a certificate chain and its key."""

    chain: str
    key: str


def decoded(spec: dict[str, Any]) -> tuple[dict[str, bytes], list[str]]:
    """A Secret's values as bytes (stringData over data, as the API server merges them), and what failed to decode."""
    values: dict[str, bytes] = {}
    problems = []
    for key, text in (spec.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"data.{key} is not base64; encode it (base64 -w0) or put the text under stringData")
    for key, text in (spec.get("stringData") or {}).items():
        values[key] = text.encode()
    return values, problems


def secret_problems(spec: dict[str, Any]) -> list[str]:
    """What is wrong with a Secret's certificates and keys, each one line."""
    values, problems = decoded(spec)
    if spec.get("type") == TLS_TYPE:
        problems += [
            f"type {TLS_TYPE} needs the key {key}; add it"
            for key in ("tls.crt", "tls.key")
            if key not in values and key not in spec.get("data", {})
        ]
    for cert_key, key_key in CERT_KEYS:
        certs = certificates(values, cert_key, problems)
        if key_key in values:
            private = private_key(values[key_key], key_key, problems)
            if certs and private is not None and not same_public_key(certs[0], private):
                problems.append(f"{key_key} is not the key of the certificate in {cert_key}; pair them up")
    for ca_key in CA_KEYS:
        certificates(values, ca_key, problems)
    return problems


def certificates(values: dict[str, bytes], key: str, problems: list[str]) -> list[Any]:
    # Imported here: resources.py (and so the dashboard, which only reads the state) needs no cryptography
    # until a Secret is applied.
    from cryptography import x509

    if key not in values:
        return []
    try:
        found = x509.load_pem_x509_certificates(values[key])
    except ValueError:
        found = []
    if not found:
        problems.append(f"{key} holds no PEM certificate; put the certificate's PEM text there")
    return found


def private_key(data: bytes, key: str, problems: list[str]) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        problems.append(f"{key} holds no unencrypted PEM private key; put the key's PEM text there")
        return None


def same_public_key(cert: Any, key: Any) -> bool:
    from cryptography.hazmat.primitives import serialization

    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*raw) == key.public_key().public_bytes(*raw)


def server_credential(secrets: dict[str, dict[str, Any]], name: str) -> ServerCredential:
    """The certificate and key a credentialName names; `secrets` maps Secret names to specs in the gateway's namespace."""
    if name not in secrets:
        raise CredentialError(f"names no Secret {name}")
    values, _ = decoded(secrets[name])
    for cert_key, key_key in CERT_KEYS:
        if values.get(cert_key) and values.get(key_key):
            return ServerCredential(values[cert_key].decode(), values[key_key].decode())
    raise CredentialError(f"names Secret {name}, which holds neither cert/key nor tls.crt/tls.key")


def ca_certificates(secrets: dict[str, dict[str, Any]], name: str) -> str:
    """The CA certificates a MUTUAL server checks clients with: Secret <name>-cacert, else the credential's own."""
    owner = name + CA_SUFFIX if name + CA_SUFFIX in secrets else name
    if owner not in secrets:
        raise CredentialError(f"names no Secret {name} or {name}{CA_SUFFIX}")
    values, _ = decoded(secrets[owner])
    for key in CA_KEYS:
        if values.get(key):
            return values[key].decode()
    raise CredentialError(f"needs a CA for MUTUAL: Secret {owner} holds neither cacert nor ca.crt")
