"""Processes of the local mesh under supervisord (restarts with backoff, survives its caller).

supervisord runs as a daemon owned by the state directory; every call here
talks to it over its unix socket.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

from meshy.errors import MeshyError
from meshy.net import wait_until


class SupervisorError(MeshyError, RuntimeError):
    pass


@dataclass(frozen=True)
class Program:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    directory: str = "/"

    def config(self, logs: Path, marker: str) -> str:
        env = {**self.env, "MESHY_STATE_DIR": marker}
        environment = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(env.items()))
        command = " ".join(_quote(part) for part in self.command)
        return "\n".join(
            [
                f"[program:{self.name}]",
                f"command={command}",
                f"directory={self.directory}",
                f"environment={environment}",
                "autostart=true",
                "autorestart=true",
                # A start that dies within a second is retried with growing back-off (1 s, 2 s, ...).
                "startsecs=1",
                "startretries=5",
                "stopsignal=TERM",
                "stopwaitsecs=6",
                "stopasgroup=true",
                "killasgroup=true",
                "redirect_stderr=true",
                f"stdout_logfile={logs / (self.name + '.log')}",
                "stdout_logfile_maxbytes=10MB",
                "stdout_logfile_backups=1",
                "",
            ]
        )


def _escape(value: str) -> str:
    return value.replace("%", "%%").replace('"', '\\"')


def _quote(part: str) -> str:
    return part.replace("%", "%%") if " " not in part else '"' + part.replace("%", "%%") + '"'


class Supervisor:
    """supervisord for one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.programs_dir = state_dir / "programs"
        self.logs = state_dir / "logs"
        self.conf = state_dir / "supervisord.conf"
        self.pidfile = state_dir / "supervisord.pid"
        # unix socket paths are limited to ~100 bytes, so the socket lives in /tmp.
        digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
        self.socket = Path(tempfile.gettempdir()) / f"meshy-{digest}.sock"

    # --- lifecycle -------------------------------------------------------------

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            self.rpc().supervisor.getState()
            return True
        except (OSError, xmlrpc.client.Error):
            return False

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        if self.running():
            return
        self.programs_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            "\n".join(
                [
                    "[supervisord]",
                    f"logfile={self.logs / 'supervisord.log'}",
                    f"pidfile={self.pidfile}",
                    "loglevel=info",
                    "minfds=1024",
                    "[unix_http_server]",
                    f"file={self.socket}",
                    "chmod=0700",
                    "[rpcinterface:supervisor]",
                    "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                    "[include]",
                    f"files={self.programs_dir}/*.conf",
                    "",
                ]
            )
        )
        started = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
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

    def shutdown(self, timeout: float = 20) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            self.rpc().supervisor.shutdown()
        except (OSError, xmlrpc.client.Error):
            os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: self.pid() is None, timeout=timeout, interval=0.05):
            os.kill(pid, signal.SIGKILL)

    def stop_programs(self) -> None:
        """Stop every program at once and wait for them.

        supervisord's own shutdown stops one process group per turn of its main
        loop, which waits up to a second a turn (supervisor 4.3.0
        supervisord.py runforever); stopAllProcesses signals them all together.
        """
        with contextlib.suppress(OSError, xmlrpc.client.Error):
            self.rpc().supervisor.stopAllProcesses(True)

    def rpc(self) -> xmlrpc.client.ServerProxy:
        # supervisor's transport costs ~50 ms to import; a stopped mesh never needs it.
        from supervisor.xmlrpc import SupervisorTransport

        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{self.socket}")
        )

    # --- programs ---------------------------------------------------------------

    def sync(self, programs: list[Program]) -> None:
        """Make the running programs exactly these (like supervisorctl update)."""
        wanted = {p.name: p.config(self.logs, str(self.state_dir)) for p in programs}
        for path in self.programs_dir.glob("*.conf"):
            if path.stem not in wanted:
                path.unlink()
        for name, text in wanted.items():
            path = self.programs_dir / f"{name}.conf"
            if not path.exists() or path.read_text() != text:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(path)
        server = self.rpc().supervisor
        added, changed, removed = server.reloadConfig()[0]
        for name in removed + changed:
            with contextlib.suppress(xmlrpc.client.Fault):
                server.stopProcessGroup(name)
            server.removeProcessGroup(name)
        for name in changed + added:
            server.addProcessGroup(name)

    def processes(self) -> list[dict]:
        return self.rpc().supervisor.getAllProcessInfo()


def leftover_pids(state_dir: Path) -> list[int]:
    """Processes started for this state directory (found by their environment marker)."""
    marker = f"MESHY_STATE_DIR={state_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker + b"\0" in environ + b"\0":
            found.append(int(entry.name))
    return found


def kill_leftovers(state_dir: Path, grace: float = 5.0) -> list[int]:
    pids = leftover_pids(state_dir)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, sig)
