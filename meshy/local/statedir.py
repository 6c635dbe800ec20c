"""A local mesh's state directory and what runs from it, without the mesh's model.

What `local.status` of a stopped mesh and `local.down` need: the configuration
(state directory and addresses), supervisord, the processes marked with the
directory and the proxies' admin sockets. LocalBackend builds on StateDir;
this module imports none of the translation layers (resources, build, Envoy
configuration, xDS), so those commands cost about what invoke itself costs.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from meshy import ROOT
from meshy.errors import MeshyError
from meshy.local import admin
from meshy.local.layout import Layout
from meshy.local.paths import PathError, check_config_path, private_dir
from meshy.local.supervisor import Ended, Supervisor, running_programs, stop_all, summary
from meshy.local.xds.control import socket_path


class LocalError(MeshyError, RuntimeError):
    """The local backend cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class LocalConfig:
    state_dir: Path
    layout: Layout = Layout()

    @classmethod
    def from_env(
        cls,
        state_dir: str | None = None,
        ingress: str | None = None,
        base: int | None = None,
        dashboard: str | None = None,
    ) -> LocalConfig:
        directory = Path(state_dir or os.environ.get("MESHY_STATE") or ROOT / ".meshy").resolve()
        try:
            check_config_path(directory)
        except PathError as error:
            raise LocalError(str(error)) from None
        host, port = loopback_address("ingress", ingress or os.environ.get("MESHY_INGRESS") or "127.0.0.1:8080")
        dashboard_host, dashboard_port = loopback_address(
            "dashboard", dashboard or os.environ.get("MESHY_DASHBOARD") or "127.0.0.1:20001"
        )
        raw_base = str(base) if base is not None else os.environ.get("MESHY_ADDRESS_BASE", "10")
        if not raw_base.isdigit() or not 1 <= int(raw_base) <= 250:
            raise LocalError(f"address base {raw_base!r} is not a number from 1 to 250; set MESHY_ADDRESS_BASE to one.")
        return cls(directory, Layout(host, port, int(raw_base), dashboard_host, dashboard_port))


def loopback_address(what: str, text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not re.fullmatch(r"127\.\d{1,3}\.\d{1,3}\.\d{1,3}", host) or not port.isdigit() or not 0 < int(port) < 65536:
        option = "--ingress or MESHY_INGRESS" if what == "ingress" else "--dashboard or MESHY_DASHBOARD"
        raise LocalError(
            f"{what} address {text!r} is not a loopback HOST:PORT; set {option} to one like 127.0.0.1:8080."
        )
    return host, int(port)


@dataclass(frozen=True)
class Stopped:
    """What local.down found and did."""

    state_existed: bool
    programs: list[str]  # programs supervisord was running
    ended: list[Ended]  # every process ended, supervisord included

    def summary(self, directory: Path) -> str:
        if not (self.state_existed or self.programs or self.ended):
            return f"no local mesh in {directory}: nothing was running, nothing removed"
        ended = f"ended {len(self.ended)} processes: {summary(self.ended)}"
        if self.programs:
            done = f"stopped supervisord and its {len(self.programs)} programs; {ended}"
        elif self.ended:
            done = f"{ended} (no supervisord was answering)"
        else:
            done = "nothing was running"
        return f"local mesh in {directory}: {done}; state removed"


class StateDir:
    """A mesh's state directory: whether its mesh runs, its processes, stopping them."""

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.dir = config.state_dir
        self.supervisor = Supervisor(self.dir, python_binary())

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One command at a time per state directory."""
        private_dir(self.dir)
        with open(self.dir / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def is_up(self) -> bool:
        return self.state_file.exists() and self.supervisor.running()

    def down(self) -> list[Ended]:
        """Stop everything of this state directory at once and remove it; return what was ended.

        Safe to run twice, and after anything: processes are found by the marker
        they all carry (supervisord too), not by pid files.
        """
        with self.locked():
            ended = stop_all(self.dir)
            self.supervisor.socket.unlink(missing_ok=True)
            self.xds_socket.unlink(missing_ok=True)
        shutil.rmtree(admin.sockets_location(self.dir), ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        return ended

    def problem(self) -> str | None:
        """One line on processes of this state directory that run outside a working mesh, or None.

        They are found by their marker, so this holds whatever happened: a killed
        supervisord, a deleted state directory, an interrupted command.
        """
        programs = running_programs(self.dir)
        programs.pop("supervisord", None)
        if not programs:
            return None
        if not self.state_file.exists():
            return (
                f"{len(programs)} processes of a mesh in {self.dir} still run but its state is gone; "
                "inv local.down ends them."
            )
        if not self.supervisor.running():
            return f"supervisord is gone: {len(programs)} processes run unsupervised; inv local.up restarts them."
        return None

    def stop(self) -> Stopped:
        """down(), reporting what was there."""
        existed = self.state_file.exists()
        programs = [p.name for p in self.supervisor.processes()] if self.supervisor.running() else []
        return Stopped(existed, programs, self.down())

    @property
    def xds_socket(self) -> Path:
        return socket_path(self.dir)

    def process_states(self) -> dict[str, str]:
        """Program name -> its state as status shows it, with restarts; also when supervisord is gone."""
        if self.supervisor.running():
            return {
                p.name: p.state + (f" ({p.restarts} restarts)" if p.restarts else "")
                for p in self.supervisor.processes()
            }
        return {name: "RUNNING (no supervisor)" for name in running_programs(self.dir)}

    def admin_socket(self, proxy: str) -> Path:
        """The owner-only Unix socket of a proxy's Envoy admin interface."""
        try:
            return admin.socket_path(self.dir, proxy)
        except PathError as error:
            raise LocalError(str(error)) from None

    def admin_get(self, proxy: str, target: str) -> str | None:
        """GET from a proxy's admin interface (by proxy name): the body on 200, else None."""
        return admin.get(self.admin_socket(proxy), target)

    def status_document(self) -> dict:
        """What status says of a directory without a mesh's state; LocalBackend adds the running mesh."""
        return {"running": False, "stateDir": str(self.dir), "pair": None, "ingress": None, "workloads": []}


def python_binary() -> str:
    # sys.prefix, not sys.executable: inv and python name the same venv differently,
    # and a changed command line would restart every app.
    return str(Path(sys.prefix) / "bin" / "python")
