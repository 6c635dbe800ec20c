"""Loopback helpers: free ports and waiting for an HTTP endpoint."""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll check() until it is true or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except OSError:  # requests' RequestException is one too
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    import requests  # here: importing it costs every `inv` call ~0.1 s

    return requests.get(url, headers=headers, timeout=1, proxies={"http": "", "https": ""}).status_code == 200


def claim_address_base(low: int = 20, high: int = 240, span: int = 4) -> tuple[int, object]:
    """A loopback block 127.b..127.(b+span-1) that no other mesh on this machine uses.

    The claim is an exclusive lock on a file in the temp directory, held as long as
    the returned handle stays open, so concurrent test runs never pick the same block.
    """
    candidates = list(range(low, high - span + 1, span))
    random.shuffle(candidates)
    for base in candidates:
        handle = open(os.path.join(tempfile.gettempdir(), f"meshy-block-{base}.lock"), "w")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        # Sidecars' outbound port 15001 and the apps' 9090: a bound one means a mesh without our lock lives here.
        if not any(port_in_use(f"127.{base + i}.0.1", port) for i in range(span) for port in (9090, 15001)):
            return base, handle
        handle.close()
    raise RuntimeError(f"no free loopback block between 127.{low} and 127.{high}")
