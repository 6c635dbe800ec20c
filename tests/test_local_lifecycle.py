"""Bringing the local mesh up and down: nothing left behind, also after its controller was killed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from meshy import ROOT
from meshy.bench import PacedLoad
from meshy.local.backend import LocalError
from meshy.local.supervisor import is_launcher, leftover_pids, running_programs
from meshy.net import port_in_use, wait_until
from tests.local_mesh import Mesh


def bound_addresses(mesh: Mesh) -> list[tuple[str, int]]:
    layout = mesh.backend.layout
    addresses = [(layout.ingress_host, layout.ingress_port), (layout.external_ip, 9090)]
    addresses.append((layout.dashboard_host, layout.dashboard_port))
    return addresses + [(layout.pod_ip(i), port) for i in range(3) for port in (9090, 15001)]


def cli_env(mesh: Mesh) -> dict[str, str]:
    """The environment that points inv at this mesh's state directory, address block, ingress and dashboard."""
    layout = mesh.backend.config.layout
    env = {**os.environ, "MESHY_STATE": str(mesh.backend.dir), "MESHY_ADDRESS_BASE": str(layout.base)}
    env["MESHY_DASHBOARD"] = f"{layout.dashboard_host}:{layout.dashboard_port}"
    return {**env, "MESHY_INGRESS": f"{layout.ingress_host}:{layout.ingress_port}"}


def cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=ROOT, env=cli_env(mesh), capture_output=True, text=True, timeout=90
    )


def start_up(mesh: Mesh) -> subprocess.Popen:
    """inv local.up in the background, as a user starts it in a terminal."""
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", "local.up"],
        cwd=ROOT,
        env=cli_env(mesh),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_down_leaves_no_process_and_no_port(tmp_path):
    mesh = Mesh(tmp_path / "state")
    try:
        mesh.up()
    finally:
        addresses = bound_addresses(mesh)
        pids = leftover_pids(mesh.backend.dir)
        mesh.backend.down()
    # supervisord, the xDS server, the dashboard, 4 apps (one outside the mesh) and 5 proxies
    assert len(pids) == 12
    assert leftover_pids(mesh.backend.dir) == []
    assert [a for a in addresses if port_in_use(*a)] == []
    assert not mesh.backend.dir.exists()
    mesh.backend.down()  # a second time is safe


def test_mesh_serves_between_up_and_down(tmp_path):
    mesh = Mesh(tmp_path / "state")
    try:
        mesh.up()
        assert mesh.get().status_code == 200
        assert any(port_in_use(*a) for a in bound_addresses(mesh))
        rows = mesh.backend.status()
        assert [r.workload for r in rows] == [
            "minimal-service",
            "minimal-service-v2",
            "bounced-service",
            "istio-ingressgateway",
            "istio-egressgateway",
            "xds-server",
            "external",
        ]
        assert all(r.ready for r in rows), rows
        # supervisord says STARTING during the program's first second
        assert re.fullmatch(r"server (STARTING|RUNNING), 5 of 5 proxies connected", rows[-2].processes)
    finally:
        mesh.backend.down()


def test_down_after_supervisor_and_controller_were_killed(tmp_path):
    state = tmp_path / "state"
    mesh = Mesh(state)
    controller = start_up(mesh)
    assert wait_until(lambda: len(leftover_pids(state)) >= 6, timeout=30)
    controller.kill()  # the controlling inv process dies mid-way
    controller.wait()
    supervisord = mesh.backend.supervisor.pid()
    assert supervisord
    os.kill(supervisord, signal.SIGKILL)  # and the supervisor too: its children are orphans now
    time.sleep(0.2)
    assert leftover_pids(state)
    result = cli(mesh, "local.down")
    if result.returncode:
        mesh.backend.down()
    assert result.returncode == 0, result.stderr
    assert leftover_pids(state) == []
    assert [a for a in bound_addresses(mesh) if port_in_use(*a)] == []


def test_ingress_port_taken_refuses_before_creating_anything(tmp_path):
    mesh = Mesh(tmp_path / "state")
    layout = mesh.backend.config.layout
    with socket.socket() as sock:
        sock.bind((layout.ingress_host, layout.ingress_port))
        sock.listen()
        with pytest.raises(LocalError, match=f"127.0.0.1:{layout.ingress_port} is already in use by another program"):
            mesh.up()
    assert leftover_pids(mesh.backend.dir) == []
    assert not (mesh.backend.dir / "state.json").exists()


def test_up_twice_does_nothing_the_second_time(tmp_path):
    mesh = Mesh(tmp_path / "state")
    try:
        assert mesh.up() > 0
        pids = sorted(leftover_pids(mesh.backend.dir))
        assert mesh.up() == 0.0
        assert sorted(leftover_pids(mesh.backend.dir)) == pids
    finally:
        mesh.backend.down()


def test_commands_need_a_running_mesh(tmp_path):
    mesh = Mesh(tmp_path / "state")
    with pytest.raises(LocalError, match="the local mesh is not running .*; start it with inv local.up"):
        mesh.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")


@pytest.mark.parametrize(
    ("ingress", "base", "message"),
    [
        ("0.0.0.0:8080", "10", "is not a loopback HOST:PORT"),
        ("localhost", "10", "is not a loopback HOST:PORT"),
        ("127.0.0.1:99999", "10", "is not a loopback HOST:PORT"),
        ("127.0.0.1:8080", "ten", "address base 'ten' is not a number from 1 to 250"),
        ("127.0.0.1:8080", "251", "address base '251'"),
    ],
)
def test_bad_settings_are_refused(tmp_path, monkeypatch, ingress, base, message):
    from meshy.local.backend import LocalConfig

    monkeypatch.setenv("MESHY_ADDRESS_BASE", base)
    with pytest.raises(LocalError, match=message):
        LocalConfig.from_env(str(tmp_path), ingress)


def assert_nothing_left(mesh: Mesh, addresses: list[tuple[str, int]]) -> None:
    assert leftover_pids(mesh.backend.dir) == []
    assert [a for a in addresses if port_in_use(*a)] == []


@pytest.fixture
def running(tmp_path):
    mesh = Mesh(tmp_path / "state")
    mesh.up()
    addresses = bound_addresses(mesh)
    yield mesh
    mesh.backend.down()
    assert_nothing_left(mesh, addresses)


@pytest.mark.parametrize("damage", ["garbage pid file", "no pid file", "state directory deleted"])
def test_down_finds_a_supervisord_whatever_happened_to_the_state(running, damage):
    addresses = bound_addresses(running)
    supervisord = running.backend.supervisor.pid()
    assert supervisord
    if damage == "garbage pid file":
        running.backend.supervisor.pidfile.write_text("not a pid\n")
    elif damage == "no pid file":
        running.backend.supervisor.pidfile.unlink()
    else:
        shutil.rmtree(running.backend.dir)
    if damage == "state directory deleted":
        status = cli(running, "local.status")
        assert "11 processes of a mesh in" in status.stdout and "still run but its state is gone" in status.stdout
        with pytest.raises(LocalError, match="still run but its state is gone; inv local.down ends them"):
            running.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    result = cli(running, "local.down")
    assert result.returncode == 0, result.stderr
    assert "ended 12 processes: 3 apps, dashboard, minimal-external, 5 proxies, supervisord, xds" in result.stdout
    assert_nothing_left(running, addresses)
    assert not running.backend.dir.exists()
    # A second down finds nothing and says so.
    assert "nothing was running" in cli(running, "local.down").stdout


def test_ctrl_c_during_up_stops_what_it_started(tmp_path):
    mesh = Mesh(tmp_path / "state")
    controller = start_up(mesh)
    try:
        # Interrupt once processes run (supervisord and a first program), well before the mesh is complete:
        # each scan of /proc is slow on a loaded machine, and the rest of up takes about a second.
        assert wait_until(lambda: len(leftover_pids(mesh.backend.dir)) >= 2, timeout=30, interval=0.01)
        controller.send_signal(signal.SIGINT)
        _, stderr = controller.communicate(timeout=30)
    finally:
        if controller.poll() is None:
            controller.kill()
    addresses = bound_addresses(mesh)
    leftovers = leftover_pids(mesh.backend.dir)
    if leftovers:
        mesh.backend.down()
    assert controller.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "stopped the" in lines[0], stderr
    assert leftovers == []
    assert [a for a in addresses if port_in_use(*a)] == []
    # Nothing blocks the next up.
    try:
        assert mesh.up() > 0
    finally:
        mesh.backend.down()


def test_apps_serve_and_status_tells_the_truth_after_supervisord_dies(running):
    os.kill(running.backend.supervisor.pid(), signal.SIGKILL)
    assert wait_until(lambda: not running.backend.supervisor.running(), timeout=5)
    # The apps' log is a file their launcher opened: no broken pipe, no failed request.
    statuses = [running.get().status_code for _ in range(100)]
    assert statuses == [200] * 100
    result = cli(running, "local.status")
    assert result.returncode == 0, result.stderr
    assert "RUNNING (no supervisor)" in result.stdout
    assert "supervisord is gone: 11 processes run unsupervised" in result.stdout
    with pytest.raises(
        LocalError, match="supervisord is gone: 11 processes run unsupervised; inv local.up puts them under a new one"
    ):
        running.apply_template("istio/minimal-virtualservice.yaml.j2")
    orphans = running_programs(running.backend.dir)
    # up hands the mesh over to a new supervisord, whose launchers adopt every running program.
    with PacedLoad(running.backend.ingress_url + "/", rate=100, host="minimal.svc.kind.org", clients=4) as load:
        assert running.up() > 0
    assert running.backend.supervisor.running()
    # Supervised again, by the very processes that served before: nothing restarted, nothing rebound.
    processes = running.backend.supervisor.processes()
    assert all(p.state in ("STARTING", "RUNNING") for p in processes), processes
    assert {p.name: p.pid for p in processes} == orphans
    # No second generation beside them: only the new supervisord (and the launchers holding them) joined.
    assert len([pid for pid in leftover_pids(running.backend.dir) if not is_launcher(pid)]) == 12
    assert load.outcome.ok > 0
    assert load.outcome.failed == 0, load.outcome.failures
    # The adopted apps still write their request log where inv local.logs reads it.
    log = running.backend.log_files("minimal-service")[0]
    size = log.stat().st_size
    assert running.get().status_code == 200
    assert wait_until(lambda: log.stat().st_size > size, timeout=5)
    # down ends the launchers holding adopted programs too, and counts each program once.
    result = cli(running, "local.down")
    assert "ended 12 processes: 3 apps, dashboard, minimal-external, 5 proxies, supervisord, xds" in result.stdout


def test_adopted_programs_are_supervised_after_a_hand_over(running):
    backend = running.backend
    os.kill(backend.supervisor.pid(), signal.SIGKILL)
    assert wait_until(lambda: not backend.supervisor.running(), timeout=5)
    before = running_programs(backend.dir)
    assert running.up() > 0
    pod = next(p for p in backend.pods() if p.deployment == "minimal-service")
    # RUNNING once the adopting launchers stayed up for startsecs (1 s): a death before would count as a failed start.
    assert wait_until(lambda: all(p.state == "RUNNING" for p in backend.supervisor.processes()), timeout=10)
    for program in (f"proxy_{pod.name}", f"app_{pod.name}"):
        old = before[program]
        os.kill(old, signal.SIGKILL)
        # The launcher holding it exits with it; supervisord starts the program anew, and the path serves again.
        assert wait_until(lambda p=program, o=old: serving_pid(backend, p) not in (0, o), timeout=10), program
        assert wait_until(lambda: running.get().status_code == 200, timeout=10), program
    # Stopping through supervisord reaches an adopted program too.
    sidecar = f"proxy_{next(p for p in backend.pods() if p.deployment == 'bounced-service').name}"
    backend.supervisor.rpc().supervisor.stopProcess(sidecar)
    assert before[sidecar] not in leftover_pids(backend.dir)
    # down ends every process, the launchers holding adopted programs included (checked by the fixture).


def serving_pid(backend, program: str) -> int:
    return next(p.pid for p in backend.supervisor.processes() if p.name == program)


def test_up_and_apply_bring_back_stopped_programs_and_status_counts_restarts(running):
    rpc = running.backend.supervisor.rpc().supervisor
    pod = next(p for p in running.backend.pods() if p.deployment == "minimal-service")
    # supervisord gave up on it (a stopped program is not restarted by supervisord either).
    rpc.stopProcess(f"app_{pod.name}")
    assert running.get().status_code == 503
    assert running.up() > 0
    assert rpc.getProcessInfo(f"app_{pod.name}")["statename"] in ("STARTING", "RUNNING")
    assert running.get().status_code == 200
    rpc.stopProcess(f"proxy_{pod.name}")
    running.apply_template("istio/minimal-virtualservice.yaml.j2")
    assert rpc.getProcessInfo(f"proxy_{pod.name}")["statename"] in ("STARTING", "RUNNING")

    def row() -> str:
        return next(r for r in running.backend.status() if r.pod == pod.name).processes

    assert wait_until(lambda: row() == "app RUNNING (1 restarts), sidecar RUNNING (1 restarts)", timeout=10), row()
    assert wait_until(lambda: running.get().status_code == 200, timeout=10)


@pytest.mark.parametrize("content", ["", '{"resources": [', "[]", '{"resources": []}'])
def test_a_damaged_state_file_is_named_with_the_fix(running, content):
    running.backend.state_file.write_text(content)
    message = f"the state file {running.backend.state_file} is damaged .*; run inv local.down"
    for call in (running.backend.status, running.up, lambda: running.apply_template("istio/services-gateway.yaml.j2")):
        with pytest.raises(LocalError, match=message):
            call()
    result = cli(running, "local.status")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: the state file {running.backend.state_file} is damaged "
        + result.stderr.split("is damaged ", 1)[1].strip()
    ]
    assert "Traceback" not in result.stderr


def test_state_is_owner_only(running):
    state = running.backend.dir
    for path in [state, state / "logs", state / "envoy", state / "programs"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in [running.backend.state_file, *(state / "logs").glob("*.log"), *(state / "envoy").rglob("*.json")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_admin_interfaces_are_owner_only_unix_sockets(running):
    layout = running.backend.layout
    proxies = [p.name for p in running.backend.pods()] + ["istio-ingressgateway", "istio-egressgateway"]
    for name in proxies:
        path = running.backend.admin_socket(name)
        assert stat.S_ISSOCK(path.stat().st_mode), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert running.backend.admin_get(name, "/ready") is not None
    # Nothing answers on the old TCP admin port of any proxy.
    ips = [layout.pod_ip(i) for i in range(3)] + [layout.gateway_ip(0), layout.gateway_ip(1)]
    assert [ip for ip in ips if port_in_use(ip, 15000)] == []
    # What reads the admin works through the socket: counters and the configuration dump.
    assert running.get().status_code == 200
    assert running.backend.proxy_stats("istio-ingressgateway", "http.")
    assert "configs" in running.backend.config_dump("istio-ingressgateway")
