"""A local mesh's state directory and what runs from it, without the mesh's model.

What `local.status` and `local.down` need: the configuration (state
directory and addresses), supervisord, the processes marked with the
directory, the proxies' admin sockets and the workloads LocalBackend saves
with the state. LocalBackend builds on StateDir; this module imports none of
the translation layers (resources, build, Envoy configuration, xDS), so
those commands cost about what invoke itself costs.
"""

from __future__ import annotations

import dataclasses
import fcntl
import http.client
import json
import os
import re
import shutil
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from meshy import ROOT
from meshy.errors import MeshyError
from meshy.local import admin
from meshy.local.layout import Layout
from meshy.local.paths import PathError, check_config_path, private_dir
from meshy.local.supervisor import Ended, Supervisor, running_programs, stop_all, summary
from meshy.local.xds.control import socket_path

EXTERNAL_NAME = "minimal-external"
# Envoy's gauge of its ADS stream: 1 while connected to the management server
# (envoy docs/root/configuration/overview/mgmt_server.rst, "control_plane.").
CONNECTED_STATE = "/stats?filter=" + quote(r"^control_plane\.connected_state$")

STATE_FILE = "state.json"  # in the state directory


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


@dataclass(frozen=True)
class StatusRow:
    workload: str
    pod: str
    address: str
    ready: bool
    processes: str


@dataclass(frozen=True)
class Workload:
    """A pod or gateway as status shows it; LocalBackend saves them with the state, from its model."""

    workload: str  # the Deployment, or the gateway's name
    pod: str  # also the name of its proxy
    address: str
    health: list[str] | None  # the app's health URLs; None for a gateway (an Envoy alone)


class StateDir:
    """A mesh's state directory: whether its mesh runs, its processes, stopping them."""

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.dir = config.state_dir
        self.supervisor = Supervisor(self.dir, python_binary())

    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

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
        if self.is_up():
            return None  # a working mesh: the scan of every process below is not needed
        programs = running_programs(self.dir)
        programs.pop("supervisord", None)
        if not programs:
            return None
        if not self.state_file.exists():
            return (
                f"{len(programs)} processes of a mesh in {self.dir} still run but its state is gone; "
                "inv local.down ends them."
            )
        return (
            f"supervisord is gone: {len(programs)} processes run unsupervised; inv local.up puts them under a new one."
        )

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

    def saved(self) -> dict | None:
        """The state file's data as saved; None without a state file."""
        try:
            data = json.loads(self.state_file.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise self.damaged(error) from None
        if not isinstance(data, dict):
            raise self.damaged(TypeError(type(data).__name__))
        return data

    def damaged(self, error: Exception) -> LocalError:
        return LocalError(
            f"the state file {self.state_file} is damaged ({type(error).__name__}); "
            "run inv local.down to remove this mesh, then inv local.up."
        )

    def status(self) -> list[StatusRow]:
        """One row per pod, gateway, the xDS server and the external service; none without a state file."""
        data = self.saved()
        if data is None:
            return []
        try:  # a state file without workloads is damaged too (or older than the field): the same fix holds
            workloads = [Workload(**entry) for entry in data["workloads"]]
            layout = Layout(**data["layout"])
        except (KeyError, TypeError) as error:
            raise self.damaged(error) from None
        processes = self.process_states()
        # Every probe waits on another process (an Envoy, an app): they are asked all at once.
        with ThreadPoolExecutor(max_workers=16) as pool:
            rows = pool.map(lambda workload: self.workload_row(workload, processes), workloads)
            connected = pool.map(self.connected, [workload.pod for workload in workloads])
            listening = pool.submit(accepts, self.xds_socket)
            health = f"http://{layout.external_ip}:9090/health"
            external = pool.submit(get_text, health) if data.get("external") else None
            rows = [*rows, self.xds_row(processes.get("xds", "STOPPED"), listening.result(), list(connected))]
        if external is not None:
            rows.append(
                StatusRow(
                    "external",
                    EXTERNAL_NAME,
                    f"{layout.external_ip}:9090",
                    external.result() is not None,
                    f"app {processes.get(EXTERNAL_NAME, 'STOPPED')} (outside the mesh)",
                )
            )
        return rows

    def workload_row(self, workload: Workload, processes: dict[str, str]) -> StatusRow:
        """Ready when its Envoy says ready and, for a pod, its app answers every health URL."""
        proxy = processes.get(f"proxy_{workload.pod}", "STOPPED")
        ready = self.admin_get(workload.pod, "/ready") is not None
        if workload.health is None:
            return StatusRow(workload.workload, workload.pod, workload.address, ready, f"envoy {proxy}")
        app = processes.get(f"app_{workload.pod}", "STOPPED")
        ready = ready and all(get_text(url) is not None for url in workload.health)
        return StatusRow(workload.workload, workload.pod, workload.address, ready, f"app {app}, sidecar {proxy}")

    def connected(self, proxy: str) -> bool:
        """Whether a proxy's ADS stream to the xDS server is up, by the proxy's own gauge."""
        return gauge(self.admin_get(proxy, CONNECTED_STATE)) == 1

    def xds_row(self, process: str, listening: bool, connected: list[bool]) -> StatusRow:
        """The control plane: ready when its socket accepts connections and every proxy is connected to it.

        The proxies' own gauges, over their admin sockets: asking the server (gRPC)
        would cost status more in imports than all its other work.
        """
        return StatusRow(
            "xds-server",
            "xds",
            str(self.xds_socket),
            listening and all(connected),
            f"server {process}, {sum(connected)} of {len(connected)} proxies connected",
        )

    def status_document(self) -> dict:
        """status() for machines: whether it runs, its pair and ingress, one entry per workload."""
        running = self.is_up()
        rows = self.status() if running else []  # first: it refuses a damaged state file
        data = self.saved() or {}
        return {
            "running": running,
            "stateDir": str(self.dir),
            "pair": data.get("pair"),
            "ingress": Layout(**data["layout"]).ingress_url if running else None,
            "workloads": [dataclasses.asdict(row) for row in rows],
        }


def python_binary() -> str:
    # sys.prefix, not sys.executable: inv and python name the same venv differently,
    # and a changed command line would restart every app.
    return str(Path(sys.prefix) / "bin" / "python")


def get_text(url: str) -> str | None:
    """The body of a 200 answer, else None; http.client because importing requests costs each inv call ~0.1 s."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=1)
    try:
        connection.request("GET", f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/")
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    return body if response.status == 200 else None


def gauge(stats: str | None) -> int | None:
    """The value of the one stat in an admin /stats answer ("name: value"), None without one."""
    value = (stats or "").strip().rpartition(": ")[2]
    return int(value) if value.isdigit() else None


def accepts(path: Path) -> bool:
    """Whether a Unix socket has a listener (connecting is enough; nothing is sent)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
