"""Processes of the local mesh under supervisord (restarts with backoff, survives its caller).

supervisord runs as a daemon owned by the state directory; every call here
talks to it over its unix socket. Its configuration names only fixed paths:
each program is `python launch.py SPEC.json` (see launch.py), so manifest
text never becomes supervisord syntax. A new supervisord's launchers adopt
the programs a killed one left running, so a hand-over restarts nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from meshy.errors import MeshyError
from meshy.local import launch
from meshy.local.admin import UnixHTTPConnection
from meshy.local.paths import PathError, check_config_path, child, private_dir, write_private
from meshy.net import wait_until

LAUNCHER = Path(launch.__file__).resolve()
# States in which supervisord will not start a program again by itself.
GIVEN_UP = {"FATAL", "EXITED", "STOPPED"}
# supervisord states of a program that still has (or is about to have) a process.
STOPPING = {"STARTING", "RUNNING", "BACKOFF", "STOPPING"}


class SupervisorError(MeshyError, RuntimeError):
    pass


@dataclass(frozen=True)
class Program:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    directory: str = "/"

    def spec(self, log: Path) -> str:
        """The JSON spec launch.py starts this program from; the env is checked first.

        Arguments and environment (manifest text) reach the process as JSON data,
        never as supervisord syntax.
        """
        for name in self.env:
            if not name or "=" in name or "\0" in name or "\0" in self.env[name]:
                raise PathError(
                    f"environment variable {name!r} of {self.name} cannot be passed to a process; "
                    "use a C identifier as its name, as Kubernetes requires."
                )
        fields = {"name": self.name, "argv": self.command, "env": self.env, "directory": self.directory}
        return json.dumps({**fields, "log": str(log)}, indent=1, sort_keys=True)


def program_config(name: str, python: str, spec_path: Path) -> str:
    """A program section of fixed paths only: the name and paths are checked before they get here."""
    # The launcher needs the standard library only: -I -S skip site-packages and PYTHON* settings, about
    # a tenth of its start-up. The program it execs gets the environment unchanged.
    command = " ".join(shlex.quote(part) for part in (python, "-I", "-S", str(LAUNCHER), str(spec_path)))
    return "\n".join(
        [
            f"[program:{name}]",
            f"command={command}",
            "autostart=true",
            "autorestart=true",
            # A start that dies within a second is retried with growing back-off (1 s, 2 s, ...).
            "startsecs=1",
            "startretries=5",
            "stopsignal=TERM",
            f"stopwaitsecs={launch.STOP_WAIT_S}",
            "stopasgroup=true",
            "killasgroup=true",
            # The launcher writes the log itself (no pipe that dies with supervisord).
            "stdout_logfile=NONE",
            "stderr_logfile=NONE",
            "",
        ]
    )


@dataclass(frozen=True)
class ProcessInfo:
    name: str
    state: str
    pid: int
    restarts: int


@dataclass(frozen=True)
class Ended:
    """A process `down` ended: its pid and what it was (program name, or supervisord)."""

    pid: int
    name: str


class Supervisor:
    """supervisord for one state directory."""

    def __init__(self, state_dir: Path, python: str = sys.executable) -> None:
        self.state_dir = state_dir
        self.python = python
        self.programs_dir = state_dir / "programs"
        self.logs = state_dir / "logs"
        self.conf = state_dir / "supervisord.conf"
        self.pidfile = state_dir / "supervisord.pid"
        # unix socket paths are limited to ~100 bytes, so the socket lives in /tmp.
        digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
        self.socket = Path(tempfile.gettempdir()) / f"meshy-{digest}.sock"

    # --- lifecycle -------------------------------------------------------------

    def running(self) -> bool:
        try:
            self.rpc().supervisor.getState()
            return True
        except (OSError, xmlrpc.client.Error):
            return False

    def pid(self) -> int | None:
        """supervisord's pid, from the marker every process of this state directory carries."""
        found = [p for p in leftover_pids(self.state_dir) if is_supervisord(p)]
        return found[0] if found else None

    def start(self) -> None:
        if self.running():
            return
        for path in (self.state_dir, self.logs, self.socket, Path(self.python), LAUNCHER):
            check_config_path(path)
        private_dir(self.programs_dir)
        private_dir(self.logs)
        write_private(
            self.conf,
            "\n".join(
                [
                    "[supervisord]",
                    f"logfile={self.logs / 'supervisord.log'}",
                    f"pidfile={self.pidfile}",
                    "loglevel=info",
                    "minfds=1024",
                    # Everything supervisord and its programs create is owner-only.
                    "umask=077",
                    "[unix_http_server]",
                    f"file={self.socket}",
                    "chmod=0700",
                    "[rpcinterface:supervisor]",
                    "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                    "[include]",
                    f"files={self.programs_dir}/*.conf",
                    "",
                ]
            ),
        )
        self.socket.unlink(missing_ok=True)
        # supervisord opens its log before it applies umask: create it owner-only first.
        os.close(os.open(self.logs / "supervisord.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        started = subprocess.run(
            [self.python, "-m", "supervisor.supervisord", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, launch.MARKER: str(self.state_dir)},
            # Its own session: a Ctrl-C in the terminal reaches the command, not the mesh.
            start_new_session=True,
        )
        if started.returncode != 0:
            lines = started.stderr.strip().splitlines() or ["no message"]
            # supervisord ends with a usage hint; its "Error: ..." line is the reason.
            reason = next((line for line in lines if line.startswith("Error")), lines[-1]).rstrip(".")
            raise SupervisorError(
                f"supervisord did not start ({reason}); see {self.logs / 'supervisord.log'} and run inv local.down."
            )
        if not wait_until(self.running, timeout=10):
            raise SupervisorError(f"supervisord did not start; see {self.logs / 'supervisord.log'}")

    def rpc(self) -> xmlrpc.client.ServerProxy:
        # The standard library's XML-RPC over the Unix socket: supervisor's own transport
        # costs every `inv local.status` tens of milliseconds to import.
        return xmlrpc.client.ServerProxy("http://localhost", transport=UnixTransport(self.socket))

    # --- programs ---------------------------------------------------------------

    def sync(self, programs: list[Program]) -> None:
        """Make the running programs exactly these (like supervisorctl update), and revive given-up ones."""
        wanted = {p.name: p for p in programs}
        # Every name and env is checked before anything is written or removed.
        specs = {name: program.spec(child(self.logs, f"{name}.log")) for name, program in wanted.items()}
        for path in list(self.programs_dir.glob("*.conf")) + list(self.programs_dir.glob("*.json")):
            if path.stem not in wanted:
                path.unlink()
                Path(launch.starts_file(path)).unlink(missing_ok=True)
                Path(launch.served_file(path)).unlink(missing_ok=True)
        respawn = []
        for name, spec_text in specs.items():
            spec_path = child(self.programs_dir, f"{name}.json")
            if write_if_changed(spec_path, spec_text):
                respawn.append(name)
            write_if_changed(child(self.programs_dir, f"{name}.conf"), program_config(name, self.python, spec_path))
        server = self.rpc().supervisor
        added, changed, removed = server.reloadConfig()[0]
        self.stop_groups(removed + changed + [n for n in respawn if n not in added + changed])
        for name in set(changed + added + respawn):
            if name in wanted:
                with contextlib.suppress(xmlrpc.client.Fault):  # already added: reloadConfig saw it first
                    server.addProcessGroup(name)
        self.revive()

    def stop_groups(self, names: list[str]) -> None:
        """Stop these programs all at once, wait until every one has ended, then drop them from supervisord.

        One blocking stop per program would add up their shutdowns (up to stopwaitsecs each); supervisord
        still sends SIGKILL to any that outlive stopwaitsecs, so the wait below is bounded.
        """
        if not names:
            return
        server = self.rpc().supervisor
        for name in names:
            with contextlib.suppress(xmlrpc.client.Fault):
                server.stopProcessGroup(name, False)
        wanted = set(names)

        def ended() -> bool:
            return not any(p["name"] in wanted and p["statename"] in STOPPING for p in server.getAllProcessInfo())

        if not wait_until(ended, timeout=launch.STOP_WAIT_S + 5, interval=0.05):
            raise SupervisorError(f"supervisord did not stop {', '.join(sorted(wanted))}; run inv local.down.")
        for name in names:
            with contextlib.suppress(xmlrpc.client.Fault):
                server.removeProcessGroup(name)

    def revive(self) -> list[str]:
        """Start the programs supervisord gave up on (FATAL) or that stopped; return their names."""
        server = self.rpc().supervisor
        names = [p["name"] for p in server.getAllProcessInfo() if p["statename"] in GIVEN_UP]
        for name in names:
            with contextlib.suppress(xmlrpc.client.Fault):
                server.startProcess(name, False)
        return names

    def processes(self) -> list[ProcessInfo]:
        return [
            ProcessInfo(p["name"], p["statename"], self.serving_pid(p["name"], p["pid"]), self.restarts(p["name"]))
            for p in self.rpc().supervisor.getAllProcessInfo()
        ]

    def serving_pid(self, name: str, launcher: int) -> int:
        """The pid of the process that serves a program: its launcher's own, or the program it adopted."""
        if not launcher:
            return 0
        served = launch.read_served(child(self.programs_dir, f"{name}.json"))
        return served.pid if served is not None and served.holder == launcher else launcher

    def unclaimed(self, name: str, pid: int) -> bool:
        """Whether a program's orphan still runs and no launcher has adopted or replaced it yet: a file read, no RPC."""
        record = launch.read_served(child(self.programs_dir, f"{name}.json"))
        if record is None or record.pid != pid:
            return False
        # Held by itself (never adopted) or by the launcher of a supervisord that has died since.
        return record.holder == pid or launch.start_time(record.holder) is None

    def restarts(self, name: str) -> int:
        try:
            return max(0, os.stat(launch.starts_file(child(self.programs_dir, f"{name}.json"))).st_size - 1)
        except OSError:
            return 0


class UnixTransport(xmlrpc.client.Transport):
    """XML-RPC to supervisord's Unix socket (its [unix_http_server]), no timeout as with supervisorctl."""

    def __init__(self, socket: Path) -> None:
        super().__init__()
        self.socket = socket

    def make_connection(self, host) -> UnixHTTPConnection:
        return UnixHTTPConnection(self.socket, timeout=None)


def write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    write_private(path, text)
    return True


def is_supervisord(pid: int) -> bool:
    return b"supervisor.supervisord" in _cmdline(pid)


def is_launcher(pid: int) -> bool:
    """A launcher that holds an adopted program (or is about to start one): not a program of its own."""
    return str(LAUNCHER).encode() in _cmdline(pid)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def marked(pid: int) -> str | None:
    """The state directory a process belongs to, from its environment (None: not a mesh process)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(launch.MARKER.encode() + b"="):
            return entry.split(b"=", 1)[1].decode(errors="replace")
    return None


def program_of(pid: int) -> str:
    if is_supervisord(pid):
        return "supervisord"
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return "?"
    prefix = launch.PROGRAM.encode() + b"="
    names = [e[len(prefix) :].decode(errors="replace") for e in environ.split(b"\0") if e.startswith(prefix)]
    return names[0] if names else "?"


def leftover_pids(state_dir: Path) -> list[int]:
    """Every live process started for this state directory (supervisord included), by its marker."""
    own = os.getpid()
    if not Path("/proc").is_dir():
        return []  # no way to read another process's environment (macOS): see stop_all
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and int(entry.name) != own
        and marked(int(entry.name)) == str(state_dir)
        and alive(int(entry.name))
    ]


def running_programs(state_dir: Path) -> dict[str, int]:
    """Program name -> pid of this state directory's processes, found without supervisord."""
    return {program_of(pid): pid for pid in leftover_pids(state_dir) if not is_launcher(pid)}


# Long enough for an idle Envoy or app to exit on SIGTERM; a draining app (up to 4 s with
# open connections) is not waited for: down ends the whole mesh, its peers included.
DOWN_GRACE = 0.5


def stop_all(state_dir: Path, grace: float = DOWN_GRACE) -> list[Ended]:
    """End every process of this state directory at once: supervisord first, then all others in parallel.

    supervisord is killed first so it cannot restart what is being stopped; the
    others get SIGTERM together and SIGKILL after the grace period.
    """
    if not Path("/proc").is_dir():
        return _stop_by_pidfile(state_dir)
    pids = leftover_pids(state_dir)
    # Launchers are stopped too, but only what they hold counts as a program.
    ended = [Ended(pid, program_of(pid)) for pid in pids if not is_launcher(pid)]
    for pid in pids:
        if is_supervisord(pid):
            _signal(pid, signal.SIGKILL)
    stop_pids(pids, grace)
    # Processes started while we were stopping (a restart that raced supervisord's end) go too.
    late = leftover_pids(state_dir)
    return ended + (stop_all(state_dir, grace) if late else [])


def _stop_by_pidfile(state_dir: Path) -> list[Ended]:
    """Without /proc only supervisord's pid file is left: it stops its programs on SIGTERM."""
    try:
        pid = int((state_dir / "supervisord.pid").read_text().strip())
    except (OSError, ValueError):
        return []
    _signal(pid, signal.SIGTERM)
    wait_until(lambda: not _exists(pid), timeout=10, interval=0.05)
    return [Ended(pid, "supervisord")]


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def stop_pids(pids: list[int], grace: float) -> None:
    """SIGTERM to all at once, SIGKILL to those still there after grace seconds; return once all are gone."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.01)
    for pid in pids:
        if alive(pid):
            _signal(pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=2, interval=0.01)


def listens(pid: int) -> bool:
    """Whether a process holds a listening socket (it accepts connections now): TCP, or Unix (the xDS server)."""
    try:
        inodes = {
            os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
            for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
        }
        tcp = [
            line.split()
            for name in ("tcp", "tcp6")
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        ]
        unix = [line.split() for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]]
    except OSError:
        return False
    # tcp columns: sl local remote st ... inode (10th); st 0A is LISTEN.
    # unix columns: Num RefCount Protocol Flags Type St Inode [Path]; flag 0x10000 is __SO_ACCEPTCON (listening).
    return any(row[3] == "0A" and row[9] in inodes for row in tcp) or any(
        len(row) >= 7 and int(row[3], 16) & 0x10000 and row[6] in inodes for row in unix
    )


def summary(ended: list[Ended]) -> str:
    """What down ended, in a few words: "3 apps, minimal-external, 5 proxies, supervisord"."""
    kinds = Counter(
        "app" if e.name.startswith("app_") else "proxy" if e.name.startswith("proxy_") else e.name for e in ended
    )
    plural = {"app": ("app", "apps"), "proxy": ("proxy", "proxies")}
    return ", ".join(f"{n} {plural[k][n != 1]}" if k in plural else k for k, n in sorted(kinds.items()))


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (one whose end its parent has not collected)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, sig)
