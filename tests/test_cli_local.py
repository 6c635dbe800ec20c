"""The local.* tasks as a user runs them, against one real local mesh (real Envoy, real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshy import ROOT
from meshy.local.supervisor import leftover_pids
from meshy.net import claim_address_base, free_port, port_in_use, wait_until
from meshy.render import render
from meshy.versions import load_matrix, select_pair
from tests.test_cli import inv
from tests.test_cli_imports import loaded_by

PAIR = select_pair()
RETRIES = "istio/bounced-virtualservice-retries.yaml.j2"


class CliMesh:
    def __init__(self, state: Path) -> None:
        self.state = state
        base, self.claim = claim_address_base()
        self.ingress = f"127.0.0.1:{free_port()}"
        self.env = {"MESHY_STATE": str(state), "MESHY_ADDRESS_BASE": str(base), "MESHY_INGRESS": self.ingress}
        self.env["MESHY_DASHBOARD"] = f"127.0.0.1:{free_port()}"

    def inv(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return inv(*args, env=self.env, **kwargs)

    def resources(self) -> list[dict]:
        return json.loads((self.state / "state.json").read_text())["resources"]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> CliMesh:
    mesh = CliMesh(tmp_path_factory.mktemp("cli") / "state")
    mesh.started = mesh.inv("local.up")
    assert mesh.started.returncode == 0, mesh.started.stderr
    yield mesh
    mesh.inv("local.down")


def test_up_prints_plain_text_and_status_lists_the_workloads(mesh):
    assert "\x1b" not in mesh.started.stdout + mesh.started.stderr  # piped: no escape sequences
    table = mesh.inv("local.status")
    assert table.returncode == 0
    assert [line.split()[0] for line in table.stdout.splitlines()[1:4]] == [
        "minimal-service",
        "minimal-service-v2",
        "bounced-service",
    ]
    document = json.loads(mesh.inv("local.status", "-o", "json").stdout)
    assert document["running"] is True and document["pair"] == PAIR.name
    assert document["ingress"] == f"http://{mesh.ingress}"
    workloads = {row["workload"]: row for row in document["workloads"]}
    assert workloads["minimal-service"]["ready"] is True
    assert workloads["istio-ingressgateway"]["address"] == mesh.ingress
    assert workloads["xds-server"]["ready"] is True
    assert workloads["xds-server"]["processes"].endswith(", 5 of 5 proxies connected")


def test_status_of_a_running_mesh_reads_the_saved_workloads_without_the_model(mesh):
    result, loaded = loaded_by(mesh.env, "local.status")
    assert result.returncode == 0, result.stderr
    assert "minimal-service-v2" in result.stdout and "5 of 5 proxies connected" in result.stdout
    assert loaded == []


def test_up_with_another_pair_or_ingress_is_refused(mesh):
    before = mesh.resources()
    other = next(p for p in reversed(load_matrix()) if p.name != PAIR.name)
    refused = mesh.inv("local.up", "--k8s", other.k8s, "--istio", other.istio)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"error: a local mesh for {PAIR.name} is already running in {mesh.state} with its ingress at "
        f"http://{mesh.ingress}; to replace it run inv local.down first, or keep it and pass another --state."
    )
    moved = mesh.inv("local.up", "--ingress", f"127.0.0.1:{free_port()}")
    assert moved.returncode == 1 and f"already running in {mesh.state}" in moved.stderr
    assert mesh.resources() == before
    again = mesh.inv("local.up")
    assert again.returncode == 0 and "nothing to do" in again.stderr


def test_apply_reads_stdin_directories_and_several_files(mesh, tmp_path):
    retries = render(RETRIES, PAIR)
    rule = render("istio/minimal-destinationrule.yaml.j2", PAIR)
    piped = mesh.inv("local.apply", "-f", "-", input=retries)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() == "VirtualService default/bounced-virtualservice-retries created"

    (tmp_path / "b-rule.yaml").write_text(rule)
    (tmp_path / "a-retries.yml").write_text(retries)
    (tmp_path / "README.md").write_text("not a manifest")
    directory = mesh.inv("local.apply", "-f", str(tmp_path))
    assert directory.stdout.splitlines() == [
        "VirtualService default/bounced-virtualservice-retries unchanged",
        "DestinationRule default/minimal-destinationrule created",
    ]
    several = mesh.inv("local.delete", "-f", str(tmp_path / "b-rule.yaml"), "-f", "-", input=retries)
    assert several.returncode == 0, several.stderr
    assert several.stdout.splitlines() == [
        "DestinationRule default/minimal-destinationrule deleted",
        "VirtualService default/bounced-virtualservice-retries deleted",
    ]


def test_an_invalid_file_among_several_changes_nothing(mesh, tmp_path):
    before = mesh.resources()
    (tmp_path / "bad.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")
    result = mesh.inv("local.apply", "-f", "-", "-f", str(tmp_path / "bad.yaml"), input=render(RETRIES, PAIR))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "bad.yaml" in result.stderr
    assert mesh.resources() == before


def test_logs_of_a_workload_show_its_pods_app_logs(mesh):
    result = mesh.inv("local.logs", "minimal-service", "--tail", "3")
    assert result.returncode == 0
    headers = [line for line in result.stdout.splitlines() if line.startswith("==> ")]
    assert len(headers) == 1 and "/logs/app_minimal-service-" in headers[0]
    assert "minimal-service-v2" not in headers[0]
    unknown = mesh.inv("local.logs", "no-such-workload")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: no log named 'no-such-workload'; known logs: ")


def test_a_scenario_puts_back_the_users_resources(mesh):
    # The user's own retry policy (3 attempts): retries deletes it to measure, then must restore it.
    own = render(RETRIES, PAIR).replace("attempts: 20", "attempts: 3")
    assert "attempts: 3" in own
    assert mesh.inv("local.apply", "-f", "-", input=own).returncode == 0
    before = mesh.resources()
    result = mesh.inv("scenario.retries", "--state", str(mesh.state))
    assert result.returncode in (0, 1), result.stderr  # the verdict is not what this test judges
    assert "put back as before the scenario: VirtualService default/bounced-virtualservice-retries restored" in (
        result.stderr
    )
    assert mesh.resources() == before
    assert mesh.inv("local.delete", "-f", "-", input=own).returncode == 0


def test_ctrl_c_in_a_scenario_puts_back_the_mesh(mesh):
    before = mesh.resources()
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "scenario.traffic-shift", "--state", str(mesh.state)],
        cwd=ROOT,
        env={**os.environ, **mesh.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background inherits SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Interrupt once the scenario has changed the mesh: its DestinationRule is applied.
    changed = wait_until(lambda: any(r["kind"] == "DestinationRule" for r in mesh.resources()), timeout=60)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert changed
    assert process.returncode == 1
    assert "put back as before the scenario: DestinationRule default/minimal-destinationrule deleted" in stderr
    assert mesh.resources() == before


def test_down_says_what_it_stopped_and_a_second_down_that_nothing_ran(mesh):
    first = mesh.inv("local.down")
    assert first.returncode == 0
    assert first.stdout.startswith(f"local mesh in {mesh.state}: stopped supervisord and its ")
    assert first.stdout.strip().endswith("; state removed")
    assert leftover_pids(mesh.state) == []  # every app and proxy ended, not only supervisord
    host, port = mesh.ingress.split(":")
    assert not port_in_use(host, int(port))
    second = mesh.inv("local.down")
    assert second.stdout.strip() == f"no local mesh in {mesh.state}: nothing was running, nothing removed"
    status = mesh.inv("local.status")
    assert status.returncode == 1
