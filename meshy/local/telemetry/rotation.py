"""A size cap on the proxies' access logs: the collector rotates what it has read.

Envoy's file access logger only appends; it reopens its files when told to
(the admin interface's POST /reopen_logs; AccessLogFileImpl::reopen in
envoyproxy/envoy source/common/access_log/access_log_manager_impl.cc: the
flush thread closes the file, opens the path anew - creating it - and writes
on). So a log past the cap is moved to NAME.1 (replacing the generation
before it) and its proxy asked to reopen: each proxy keeps at most two
generations of each log, about 2 x MAX_BYTES apiece.
"""

from __future__ import annotations

import os
from pathlib import Path

from meshy.local import admin
from meshy.local.telemetry.accesslog import JSON_FILE, TEXT_FILE, rotated

# 4 MiB holds about 15,000 requests of either format; a proxy's logs stay under 16 MiB in all.
MAX_BYTES = 4 * 1024 * 1024


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def due(directory: Path, read: int, max_bytes: int) -> bool:
    """Whether a proxy's logs are to be rotated: the collector has read `read` bytes of the JSON log,
    and rotates only what it has read, or the text log (which it does not read) is past the cap."""
    return read >= max_bytes or size(directory / TEXT_FILE) >= max_bytes


def rotate(state_dir: Path, proxy: str, directory: Path) -> bool:
    """Move both logs aside and have the proxy reopen them; False if its admin interface did not answer
    (the logs then keep growing at NAME.1 until it does and the next rotation replaces them)."""
    for name in (TEXT_FILE, JSON_FILE):
        path = directory / name
        if path.exists():
            os.replace(path, rotated(path))
    return admin.post(admin.socket_path(state_dir, proxy), "/reopen_logs") is not None
