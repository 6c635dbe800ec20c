"""Start one program of the local mesh from a JSON spec: `python launch.py SPEC.json`.

supervisord's configuration holds only this command and fixed paths; the
program's arguments and environment (manifest text such as env names and
values) travel in the spec file as JSON, so no user text is ever parsed as
supervisord syntax. The launcher also opens the program's log file itself:
a program whose supervisor died keeps a working stdout instead of a broken pipe.

A hand-over to a new supervisord restarts nothing: when the program of this
spec still runs from before (its supervisord was killed), the launcher adopts
it instead of starting another one. It stays as a thin parent that passes
supervisord's signals on and exits when the program does, so supervisord
stops and restarts the program as if it were its own child.

Only the standard library, and little of it: supervisord starts one launcher
per program at once, and a hand-over waits for all of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Every process of a mesh carries this variable (value: its state directory), so
# `down` finds them all - supervisord included - whatever happened to the pid files.
MARKER = "MESHY_STATE_DIR"
# Which program a process is, for `status` when supervisord is gone.
PROGRAM = "MESHY_PROGRAM"
LOG_MAX_BYTES = 10 * 1024 * 1024
# supervisord's stopwaitsecs: after it, supervisord SIGKILLs the launcher's process group, which
# an adopted program is not part of, so the launcher kills its program a second before that.
STOP_WAIT_S = 6
# What supervisord and `down` send to stop or signal a program; an adopting launcher passes them on.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


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


@dataclass(frozen=True)
class Served:
    """Which process serves a program: its pid and start time (a reused pid has another), the
    digest of the spec it was started from, and the launcher holding it (itself unless adopted)."""

    pid: int
    start: int
    digest: str
    holder: int

    def to_text(self) -> str:
        return f"{self.pid} {self.start} {self.digest} {self.holder}\n"

    @classmethod
    def from_text(cls, text: str) -> Served | None:
        parts = text.split()
        if len(parts) != 4 or not (parts[0].isdigit() and parts[1].isdigit() and parts[3].isdigit()):
            return None
        return cls(int(parts[0]), int(parts[1]), parts[2], int(parts[3]))


def starts_file(spec_path: Path) -> Path:
    """One byte per start: its size minus one is the restart count `status` shows."""
    return spec_path.with_suffix(".starts")


def served_file(spec_path: Path) -> Path:
    return spec_path.with_suffix(".pid")


def spec_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def environment(spec: Spec, inherited: dict[str, str]) -> dict[str, str]:
    # The marker comes last so no manifest env var can hide a process from `down`.
    return {**inherited, **spec.env, PROGRAM: spec.name, MARKER: inherited.get(MARKER, "")}


def open_log(path: str) -> int:
    """The program's stdout and stderr: appended, owner-only, rotated once it passes 10 MB at a start."""
    log = Path(path)
    if log.exists() and log.stat().st_size > LOG_MAX_BYTES:
        log.replace(log.with_name(log.name + ".1"))
    return os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def start_time(pid: int) -> int | None:
    """A live process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None once it has ended."""
    try:
        # The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Field 3 is the state: a zombie or dead process serves nothing.
    return None if fields[0] in ("Z", "X") else int(fields[19])


def read_record(spec_path: Path) -> Served | None:
    """What the last launcher of this spec recorded, whether or not that process still runs."""
    try:
        return Served.from_text(served_file(spec_path).read_text())
    except OSError:
        return None


def read_served(spec_path: Path) -> Served | None:
    """The process serving this spec's program, if it still runs (same pid and start time)."""
    served = read_record(spec_path)
    if served is None or start_time(served.pid) != served.start:
        return None
    return served


def write_served(spec_path: Path, served: Served) -> None:
    # Beside, then renamed: a reader sees the old record or the new one.
    path = served_file(spec_path)
    tmp = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(served.to_text())
    os.replace(tmp, path)


def carries(pid: int, name: str, state_dir: str) -> bool:
    """Whether a process was started as program `name` of the mesh in state_dir (its environment says so)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{PROGRAM}={name}".encode() in environ and f"{MARKER}={state_dir}".encode() in environ


def orphan_of(spec_path: Path, name: str, digest: str, state_dir: str) -> Served | None:
    """The still running process of this program from before, started from this very spec, or None."""
    served = read_served(spec_path)
    if served is None or served.pid == os.getpid() or served.digest != digest:
        return None
    return served if carries(served.pid, name, state_dir) else None


def adopt(spec_path: Path, served: Served) -> int:
    """Hold an adopted program as if it were a child: pass signals on, exit when it exits.

    Exits 0 when it ended after a stop signal, 1 when it ended on its own (so
    supervisord restarts the program), and also when the supervisord that
    started this launcher dies (the next one adopts the program again).
    """
    try:
        program = os.pidfd_open(served.pid)
    except OSError:
        return 1
    # The pid may have ended and been reused between the check and the open: the pidfd must be of the same start.
    if start_time(served.pid) != served.start:
        return 1
    parent_pid = os.getppid()
    parent = os.pidfd_open(parent_pid)
    if os.getppid() != parent_pid:
        return 0  # supervisord died before its pidfd was open
    write_served(spec_path, Served(served.pid, served.start, served.digest, os.getpid()))
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_read, False)
    os.set_blocking(wakeup_write, False)
    # The signal handlers do nothing: the wakeup pipe carries each signal's number to the loop below.
    signal.set_wakeup_fd(wakeup_write)
    for number in FORWARDED:
        signal.signal(number, lambda *_: None)
    poller = select.poll()
    for descriptor in (program, parent, wakeup_read):
        poller.register(descriptor, select.POLLIN)
    kill_at: float | None = None
    while True:
        timeout = None if kill_at is None else max(0, round((kill_at - time.monotonic()) * 1000))
        ready = {descriptor for descriptor, _ in poller.poll(timeout)}
        if program in ready:
            return 0 if kill_at is not None else 1
        if parent in ready:
            return 0
        if wakeup_read in ready:
            for number in os.read(wakeup_read, 64):
                with_signal(program, number)
                if number in STOPPING and kill_at is None:
                    kill_at = time.monotonic() + STOP_WAIT_S - 1
        if kill_at is not None and time.monotonic() >= kill_at:
            with_signal(program, signal.SIGKILL)


def with_signal(pidfd: int, number: int) -> None:
    # It may have just ended: the poll sees that next.
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, number)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m meshy.local.launch SPEC.json", file=sys.stderr)
        return 2
    spec_path = Path(argv[1])
    text = spec_path.read_text()
    spec = Spec.from_json(text)
    digest = spec_digest(text)
    state_dir = os.environ.get(MARKER, "")
    orphan = orphan_of(spec_path, spec.name, digest, state_dir)
    if orphan is not None:
        return adopt(spec_path, orphan)
    with open(starts_file(spec_path), "ab") as starts:
        starts.write(b".")
    if spec.log:
        descriptor = open_log(spec.log)
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        os.close(descriptor)
    os.chdir(spec.directory)
    own = start_time(os.getpid()) or 0
    # execve keeps the pid and start time: this record names the program from now on.
    write_served(spec_path, Served(os.getpid(), own, digest, os.getpid()))
    os.execve(spec.argv[0], spec.argv, environment(spec, dict(os.environ)))
    return 127  # not reached: execve replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv))
