"""Bringing the local mesh up and down: nothing left behind, also after its controller was killed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from meshy import ROOT
from meshy.local.backend import LocalError
from meshy.local.supervisor import leftover_pids
from meshy.net import port_in_use, wait_until
from tests.local_mesh import Mesh


def bound_addresses(mesh: Mesh) -> list[tuple[str, int]]:
    layout = mesh.backend.layout
    addresses = [(layout.ingress_host, layout.ingress_port), (layout.external_ip, 9090), (layout.gateway_ip(0), 15000)]
    return addresses + [(layout.pod_ip(i), port) for i in range(3) for port in (9090, 15000, 15001)]


def test_down_leaves_no_process_and_no_port(tmp_path):
    mesh = Mesh(tmp_path / "state")
    try:
        mesh.up()
    finally:
        addresses = bound_addresses(mesh)
        pids = leftover_pids(mesh.backend.dir)
        mesh.backend.down()
    assert len(pids) == 10  # 4 apps (one outside the mesh), 5 proxies and the xDS server, all under supervisord
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
    env = {**os.environ, "MESHY_STATE": str(state), "MESHY_ADDRESS_BASE": str(mesh.backend.config.layout.base)}
    env["MESHY_INGRESS"] = f"127.0.0.1:{mesh.backend.config.layout.ingress_port}"
    controller = subprocess.Popen(
        [sys.executable, "-m", "invoke", "local.up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_until(lambda: len(leftover_pids(state)) >= 6, timeout=30)
    controller.kill()  # the controlling inv process dies mid-way
    controller.wait()
    supervisord = mesh.backend.supervisor.pid()
    assert supervisord
    os.kill(supervisord, signal.SIGKILL)  # and the supervisor too: its children are orphans now
    time.sleep(0.2)
    assert leftover_pids(state)
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "local.down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
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
