"""Manifests named on the command line: files, directories of YAML files, `-` for standard input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from meshy.errors import MeshyError

SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"


class InputError(MeshyError):
    """Manifests that cannot be read, or that hold nothing to apply."""


@dataclass(frozen=True)
class Manifest:
    source: str  # the path, or <stdin>
    text: str


def read_manifests(paths: list[str], stdin: BinaryIO) -> list[Manifest]:
    """Every manifest the paths name, in order; a directory gives its YAML/JSON files sorted by name."""
    if not paths:
        raise InputError("no manifest given; pass -f FILE, -f DIRECTORY or -f - for standard input.")
    manifests = []
    for path in paths:
        if path == STDIN:
            manifests.append(Manifest("<stdin>", decoded(stdin.read(), "<stdin>")))
        elif Path(path).is_dir():
            manifests += [read_file(str(file)) for file in directory_files(Path(path))]
        else:
            manifests.append(read_file(path))
    return manifests


def directory_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in SUFFIXES)
    if not files:
        raise InputError(f"{directory} holds no {', '.join(SUFFIXES)} file; pass a directory of manifests or a file.")
    return files


def read_file(path: str) -> Manifest:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {path} ({error.strerror}); pass an existing YAML file with -f.") from None
    return Manifest(path, decoded(data, path))


def decoded(data: bytes, source: str) -> str:
    """Bytes as text; UTF-16 or other non-UTF-8 input is refused in one line naming the source."""
    from meshy.local.resources import decode

    return decode(data, source)


def combined(manifests: list[Manifest], verb: str) -> Manifest:
    """One multi-document text of all manifests, each validated first so an error names its own file."""
    from meshy.local.resources import parse_documents

    count = sum(len(parse_documents(m.text, m.source)) for m in manifests)
    if count == 0:
        raise InputError(f"no objects passed to {verb}; the input holds no manifest, only comments or blank lines.")
    return Manifest(", ".join(m.source for m in manifests), "\n---\n".join(m.text for m in manifests))
