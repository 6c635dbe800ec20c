"""How the backend reaches the mesh's xDS server: its socket and its control service's name.

Apart from the server and the client so that finding the socket (local.down,
local.status) imports neither gRPC nor Envoy's API.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CONTROL = "meshy.xds.Control"
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def socket_path(state_dir: Path) -> Path:
    """The server's socket in the state directory, or a short hashed path when that is too long."""
    path = state_dir / "xds.sock"
    if len(str(path).encode()) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/tmp") / f"meshy-xds-{digest}.sock"
