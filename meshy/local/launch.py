"""Start one program of the local mesh from a JSON spec: `python -m meshy.local.launch SPEC`.

supervisord's configuration holds only this command and fixed paths; the
program's arguments and environment (manifest text such as env names and
values) travel in the spec file as JSON, so no user text is ever parsed as
supervisord syntax. The launcher also opens the program's log file itself:
a program whose supervisor died keeps a working stdout instead of a broken pipe.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Every process of a mesh carries this variable (value: its state directory), so
# `down` finds them all - supervisord included - whatever happened to the pid files.
MARKER = "MESHY_STATE_DIR"
# Which program a process is, for `status` when supervisord is gone.
PROGRAM = "MESHY_PROGRAM"
LOG_MAX_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Spec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    directory: str = "/"
    log: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls(**json.loads(text))


def starts_file(spec_path: Path) -> Path:
    """One byte per start: its size minus one is the restart count `status` shows."""
    return spec_path.with_suffix(".starts")


def environment(spec: Spec, inherited: dict[str, str]) -> dict[str, str]:
    # The marker comes last so no manifest env var can hide a process from `down`.
    return {**inherited, **spec.env, PROGRAM: spec.name, MARKER: inherited.get(MARKER, "")}


def open_log(path: str) -> int:
    """The program's stdout and stderr: appended, owner-only, rotated once it passes 10 MB at a start."""
    log = Path(path)
    if log.exists() and log.stat().st_size > LOG_MAX_BYTES:
        log.replace(log.with_name(log.name + ".1"))
    return os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m meshy.local.launch SPEC.json", file=sys.stderr)
        return 2
    spec_path = Path(argv[1])
    spec = Spec.from_json(spec_path.read_text())
    with open(starts_file(spec_path), "ab") as starts:
        starts.write(b".")
    if spec.log:
        descriptor = open_log(spec.log)
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        os.close(descriptor)
    os.chdir(spec.directory)
    os.execve(spec.argv[0], spec.argv, environment(spec, dict(os.environ)))
    return 127  # not reached: execve replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv))
