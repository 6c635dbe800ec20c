"""Start one program of the local mesh from its JSON spec (Program.spec): `python launch.py SPEC.json`.

supervisord's configuration holds only this command and fixed paths; the
program's arguments and environment travel in the spec file as JSON. The
launcher also opens the program's log file itself: a program whose supervisor
died keeps a working stdout instead of a broken pipe, and a hand-over loses no line.

A hand-over to a new supervisord restarts nothing: when the program of this
spec still runs from before (its supervisord was killed), the launcher adopts
it instead of starting another one. It stays as a thin parent that passes
supervisord's signals on and exits when the program does, so supervisord
stops and restarts the program as if it were its own child.

supervisord starts one launcher per program at once and a hand-over waits for
all of them, so this module imports little: no json, dataclasses or pathlib
unless it starts a program (they would double its start-up CPU).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import select
import signal
import sys
import time

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

# Which process serves a program: its pid and start time (a reused pid has another), the digest of
# the spec it was started from, and the launcher holding it (the program itself unless adopted).
# A named tuple, not a dataclass: see the module's note on imports.
Served = collections.namedtuple("Served", "pid start digest holder")


def served_text(served: Served) -> str:
    return f"{served.pid} {served.start} {served.digest} {served.holder}\n"


def parse_served(text: str) -> Served | None:
    parts = text.split()
    if len(parts) != 4 or not (parts[0].isdigit() and parts[1].isdigit() and parts[3].isdigit()):
        return None
    return Served(int(parts[0]), int(parts[1]), parts[2], int(parts[3]))


def starts_file(spec_path: str | os.PathLike) -> str:
    """One byte per start: its size minus one is the restart count `status` shows."""
    return os.path.splitext(spec_path)[0] + ".starts"


def served_file(spec_path: str | os.PathLike) -> str:
    return os.path.splitext(spec_path)[0] + ".pid"


def spec_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def environment(spec_env: dict[str, str], name: str, inherited: dict[str, str]) -> dict[str, str]:
    # The marker comes last so no manifest env var can hide a process from `down`.
    return {**inherited, **spec_env, PROGRAM: name, MARKER: inherited.get(MARKER, "")}


def open_log(path: str) -> int:
    """The program's stdout and stderr: appended, owner-only, rotated once it passes 10 MB at a start."""
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_size > LOG_MAX_BYTES:
            os.replace(path, path + ".1")
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def start_time(pid: int) -> int | None:
    """A live process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None once it has ended."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Field 3 is the state: a zombie or dead process serves nothing.
    return None if fields[0] in ("Z", "X") else int(fields[19])


def read_record(spec_path: str | os.PathLike) -> Served | None:
    """What the last launcher of this spec recorded, whether or not that process still runs."""
    try:
        with open(served_file(spec_path)) as record:
            return parse_served(record.read())
    except OSError:
        return None


def read_served(spec_path: str | os.PathLike) -> Served | None:
    """The process serving this spec's program, if it still runs (same pid and start time)."""
    served = read_record(spec_path)
    if served is None or start_time(served.pid) != served.start:
        return None
    return served


def write_served(spec_path: str | os.PathLike, served: Served) -> None:
    # Beside, then renamed: a reader sees the old record or the new one.
    path = served_file(spec_path)
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(served_text(served))
    os.replace(tmp, path)


def carries(pid: int, name: str, state_dir: str) -> bool:
    """Whether a process was started as program `name` of the mesh in state_dir (its environment says so)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            entries = environ.read().split(b"\0")
    except OSError:
        return False
    return f"{PROGRAM}={name}".encode() in entries and f"{MARKER}={state_dir}".encode() in entries


def orphan_of(spec_path: str, name: str, digest: str, state_dir: str) -> Served | None:
    """The still running process of this program from before, started from this very spec, or None."""
    served = read_served(spec_path)
    if served is None or served.pid == os.getpid() or served.digest != digest:
        return None
    return served if carries(served.pid, name, state_dir) else None


def adopt(spec_path: str, served: Served) -> int:
    """Hold an adopted program as if it were a child: pass signals on, exit when it exits.

    Exits 0 when it ended after a stop signal, 1 when it ended on its own (so
    supervisord restarts the program), and 0 when the supervisord that
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
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_read, False)
    os.set_blocking(wakeup_write, False)
    # The handlers do nothing: the wakeup pipe carries each signal's number to the loop below.
    signal.set_wakeup_fd(wakeup_write)
    for number in FORWARDED:
        signal.signal(number, lambda *_: None)
    poller = select.poll()
    for descriptor in (program, parent, wakeup_read):
        poller.register(descriptor, select.POLLIN)
    # Claimed only now that signals reach the program: from here on a stop is passed on.
    write_served(spec_path, Served(served.pid, served.start, served.digest, os.getpid()))
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
                send(program, number)
                if number in STOPPING and kill_at is None:
                    kill_at = time.monotonic() + STOP_WAIT_S - 1
        if kill_at is not None and time.monotonic() >= kill_at:
            send(program, signal.SIGKILL)


def send(pidfd: int, number: int) -> None:
    # It may have just ended: the poll sees that next.
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, number)


def start(spec_path: str, text: str, digest: str) -> int:
    """Become the program: count the start, record it, point its output at its log, exec."""
    import json  # only here: adopting needs no parsing (see the module's note on imports)

    spec = json.loads(text)  # as supervisor.Program.spec writes it
    with open(starts_file(spec_path), "ab") as starts:
        starts.write(b".")
    if spec["log"]:
        descriptor = open_log(spec["log"])
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        os.close(descriptor)
    os.chdir(spec["directory"])
    own = start_time(os.getpid()) or 0
    # execve keeps the pid and start time: this record names the program from now on.
    write_served(spec_path, Served(os.getpid(), own, digest, os.getpid()))
    argv = spec["argv"]
    os.execve(argv[0], argv, environment(spec["env"], spec["name"], dict(os.environ)))
    return 127  # not reached: execve replaces this process or raises


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python launch.py SPEC.json", file=sys.stderr)
        return 2
    spec_path = argv[1]
    with open(spec_path) as handle:
        text = handle.read()
    digest = spec_digest(text)
    # The supervisor layer names each spec file after its program.
    name = os.path.splitext(os.path.basename(spec_path))[0]
    orphan = orphan_of(spec_path, name, digest, os.environ.get(MARKER, ""))
    return adopt(spec_path, orphan) if orphan is not None else start(spec_path, text, digest)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
