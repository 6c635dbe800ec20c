"""JSON Web Tokens a scenario signs when it runs (RS256, RFC 7515/7518), and the JWKS that verifies them.

Made with `cryptography` alone: a JWT here is three base64url parts, the
signature RSASSA-PKCS1-v1_5 with SHA-256 over the first two.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def number(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class Signer:
    """An RSA key, its JWKS, and tokens for one issuer."""

    def __init__(self, issuer: str, kid: str = "meshy") -> None:
        self.issuer = issuer
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def jwks(self) -> str:
        public = self.key.public_key().public_numbers()
        key = {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": number(public.n),
            "e": number(public.e),
        }
        return json.dumps({"keys": [key]}, separators=(",", ":"))

    def token(self, subject: str, lifetime: float = 3600.0, **claims: Any) -> str:
        """A token for `subject`; a negative lifetime makes one that has expired."""
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        payload = {"iss": self.issuer, "sub": subject, "iat": now, "exp": now + int(lifetime), **claims}
        signing_input = ".".join(b64url(json.dumps(part).encode()) for part in (header, payload))
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"
