"""Paths inside a state directory: every file the local backend writes is checked to stay there."""

from __future__ import annotations

import os
import re
from pathlib import Path

from meshy.errors import MeshyError

# A name becomes one path component and one supervisord section name: plain characters only,
# whatever validation the manifests went through before.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
# supervisord reads its configuration as INI text with %-expansion and ; comments.
UNSAFE_IN_CONFIG = re.compile(r"[\x00-\x1f\x7f%;#\"'\\]")


class PathError(MeshyError, ValueError):
    """A name or path cannot be used safely; the message names it and what to do."""


def child(root: Path, *names: str) -> Path:
    """root/names..., refusing any name that is not one plain path component."""
    for name in names:
        if not SAFE_NAME.fullmatch(name) or name in (".", ".."):
            raise PathError(
                f"{name!r} cannot name a file of the local mesh; use letters, digits, '-', '_' and '.' only."
            )
    path = root.joinpath(*names)
    resolved, base = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([resolved, base]) != base:
        raise PathError(f"{path} leads outside the state directory {root}; remove the link that points elsewhere.")
    return path


def check_config_path(path: Path) -> Path:
    """A path written into supervisord's configuration: no character its INI syntax would interpret."""
    if UNSAFE_IN_CONFIG.search(str(path)):
        raise PathError(
            f"the state directory {path} contains a control character, quote, %, ; or #; "
            "choose another one with --state or MESHY_STATE."
        )
    return path


def private_dir(path: Path) -> Path:
    """Create a directory only its owner can read (0700), also when it already exists."""
    if path.is_dir():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o700)
        return path
    # mkdir(parents=True) would give the missing parents the umask's mode, not 0700.
    missing = [path, *(p for p in path.parents if not p.exists())]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    return path


def write_private(path: Path, text: str, durable: bool = False) -> None:
    """Write beside, then rename into place, owner-only: readers never see half a file.

    durable also flushes to disk before the rename, so a crash leaves the old or the new file.
    """
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
