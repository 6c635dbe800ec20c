"""Connections through a gateway's TCP port, one HTTP request on each: which pod answered each connection.

The gateway proxies bytes, not requests, so every connection is routed once;
one request per connection makes the answers count connections.
"""

from __future__ import annotations

import http.client
import json
import socket

TIMEOUT = 5.0


def served_by(address: str, port: int, host: str) -> str:
    """The answering pod's name (minimal-service's servedBy), or "" when the connection got no answer."""
    connection = http.client.HTTPConnection(address, port, timeout=TIMEOUT)
    try:
        connection.connect()
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.request("GET", "/", headers={"Host": host, "Connection": "close"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            return ""
        return str(json.loads(body).get("servedBy", ""))
    except (OSError, http.client.HTTPException, ValueError):
        return ""
    finally:
        connection.close()


def connections(address: str, port: int, host: str, n: int) -> list[str]:
    return [served_by(address, port, host) for _ in range(n)]
