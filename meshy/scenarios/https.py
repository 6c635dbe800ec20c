"""HTTPS calls as a client outside the mesh makes them: SNI and Host set to a name, the server verified against a CA.

Each call opens its own connection, so each is a full handshake: what is
counted is what the gateway does with a TLS client, not a reused session.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import tempfile
from pathlib import Path

from meshy.scenarios.certificates import Issued

OK = "200"
UNTRUSTED = "untrusted"  # the client refused the server's certificate
REFUSED = "refused"  # the server ended the handshake or the connection (no or a wrong client certificate)
TIMEOUT = 5.0


def context(trust: str, client: Issued | None, directory: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=trust)
    if client is not None:
        # ssl loads a client certificate from files only: owner-only ones in a directory of our own.
        cert, key = directory / "client.crt", directory / "client.key"
        cert.write_text(client.cert)
        key.touch(mode=0o600)
        key.write_text(client.key)
        ctx.load_cert_chain(cert, key)
    return ctx


def call(ctx: ssl.SSLContext, address: str, port: int, host: str) -> str:
    """One GET / on a new connection: the status code, or UNTRUSTED or REFUSED."""
    try:
        raw = socket.create_connection((address, port), timeout=TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
            connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
            connection.sock = tls
            connection.request("GET", "/", headers={"Host": host, "Connection": "close"})
            response = connection.getresponse()
            response.read()
            return str(response.status)
    except ssl.SSLCertVerificationError:
        return UNTRUSTED
    except (TimeoutError, ssl.SSLError, ConnectionError, http.client.HTTPException):
        # With TLS 1.3 a server that wants a client certificate says so after the client's handshake
        # ends, so the refusal can surface on the first read as well as in the handshake.
        return REFUSED


def calls(address: str, port: int, host: str, trust: str, client: Issued | None, n: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="meshy-client-") as directory:
        ctx = context(trust, client, Path(directory))
        return [call(ctx, address, port, host) for _ in range(n)]
