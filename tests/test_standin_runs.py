"""The cluster path's entry points run as a user runs them - `inv ...` in a subprocess - against
recording stand-ins for docker, kind, kubectl and istioctl (tests/standins/), over a real local mesh.

The full demo of every pair runs in the `standins-<pair>` nox sessions; here, the chain up to the
cluster being ready, and each defect the stand-ins reproduce.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshy import ROOT
from meshy.net import claim_address_base
from meshy.versions import select_pair
from tests.standins import harness


@dataclass
class Machine:
    """A machine whose docker, kind, kubectl and istioctl are the stand-ins."""

    work: Path
    env: dict[str, str]

    @property
    def state(self) -> Path:
        return self.work / "standins"

    def inv(self, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=ROOT,
            env={**os.environ, **self.env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )

    def log(self) -> list[str]:
        return harness.logged_commands(self.state)

    def set_daemon_down(self, down: bool) -> None:
        path = self.state / "state.json"
        state = json.loads(path.read_text())
        state["daemon_down"] = down
        path.write_text(json.dumps(state))


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    base, claim = claim_address_base()
    env = harness.standin_env(tmp_path, base)
    for pair in (select_pair("1.19", "1.8"), select_pair("1.36", "1.30")):
        harness.seed_istio(tmp_path / "cache", pair)
    box = Machine(tmp_path, env)
    yield box
    for k8s, istio in (("1.19", "1.8"), ("1.36", "1.30")):
        box.inv("down", "--k8s", k8s, "--istio", istio)  # stops the local mesh behind a stand-in cluster
    claim.close()


def test_up_runs_exactly_its_dry_plan_and_down_removes_everything(machine):
    pair = ("--k8s", "1.36", "--istio", "1.30")
    dry = machine.inv("--dry", "up", *pair)
    assert dry.returncode == 0, dry.stderr
    real = machine.inv("up", *pair)
    assert real.returncode == 0, real.stderr
    planned, ran = harness.plan_commands(dry.stdout), machine.log()
    assert planned == ran, harness.first_difference(planned, ran)
    # Istio 1.30 on Kubernetes 1.36: the stand-in's pods carry istio-proxy as a native sidecar (1/1).
    assert "Checking that every pod runs its app and a ready istio-proxy" in real.stderr
    again = machine.inv("up", *pair)
    assert again.returncode == 0, again.stderr
    changing = [
        c for c in machine.log()[len(ran) :] if any(w in c for w in (" create ", " run ", " push ", "istioctl"))
    ]
    assert changing == []  # a ready environment: nothing is created again
    down = machine.inv("down", *pair)
    assert down.returncode == 0, down.stderr
    state = json.loads((machine.state / "state.json").read_text())
    assert state["containers"] == {} and state["clusters"] == {}


def test_demo_dry_plan_holds_the_whole_chain_and_every_scenario_command(tmp_path):
    # No seeded release: only istio.download, run as a pre-task, can bring istioctl (invoke runs pre-tasks
    # through its Executor only; Task.__call__ runs the body alone, invoke/tasks.py at 3.0.3).
    env = {"MESHY_CACHE": str(tmp_path / "cache"), "PATH": os.environ["PATH"]}
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--dry", "demo", "--backend", "kind", "--k8s", "1.19", "--istio", "1.8"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in [
        "# would download https://github.com/istio/istio/releases/download/1.8.6/istio-1.8.6-",
        "istioctl install --context kind-kube-meshy-1-19 -f ",
        "docker run -d --network kind -e SERVICE_ADDRESS=0.0.0.0 --user ",
        "-e TLS_PORT=9443 -e TLS_CERT_FILE=/etc/external-tls/tls.crt -e TLS_KEY_FILE=/etc/external-tls/tls.key "
        "--name minimal-external",
        "get --raw /api/v1/namespaces/default/services/bounced-service:http/proxy/metrics",
        "exec deploy/istio-egressgateway -c istio-proxy -- pilot-agent request GET stats/prometheus",
        # Istio's metrics the retries and traffic-shift verdicts count: both sidecars, the ingress gateway.
        "-n default exec deploy/minimal-service -c istio-proxy -- pilot-agent request GET stats/prometheus",
        "-n default exec deploy/bounced-service -c istio-proxy -- pilot-agent request GET stats/prometheus",
        "-n istio-system exec deploy/istio-ingressgateway -c istio-proxy -- pilot-agent request GET stats/prometheus",
        "exec deploy/istio-ingressgateway -c istio-proxy -- pilot-agent request GET config_dump",
        "#   stdin: VirtualService/bounced-virtualservice-retries",
        "would send 1 x GET http://127.0.0.1:8080/ (Host kiali.istio.kind.org)",
    ]:
        assert expected in out, expected
    assert " wait --selector" not in out and "--for=condition=ready pod" not in out
    assert not (tmp_path / "cache").exists()  # a dry run downloads nothing


def test_registry_recreated_by_down_gets_the_image_pushed_again(machine):
    pushes = lambda: [c for c in machine.log() if c.startswith("docker push")]  # noqa: E731
    assert machine.inv("images.build").returncode == 0
    assert len(pushes()) == 1
    assert machine.inv("images.build").returncode == 0
    assert len(pushes()) == 1  # the registry holds it
    assert machine.inv("registry.down").returncode == 0  # the image stays in the local Docker
    result = machine.inv("images.build")
    assert result.returncode == 0, result.stderr
    assert len(pushes()) == 2


def test_kind_release_other_than_the_pairs_is_refused_before_creating(machine):
    result = machine.inv("cluster.up", "--k8s", "1.19", "--istio", "1.8", extra={"MESHY_STANDIN_KIND": "v0.32.0"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: kind v0.32.0 is on PATH, but kindest/node:v1.19.16 is built for kind v0.12.0; install kind v0.12.0 "
        "(https://github.com/kubernetes-sigs/kind/releases/tag/v0.12.0)."
    )
    assert not [c for c in machine.log() if c.startswith("kind create")]


def test_down_with_the_docker_daemon_down_fails_instead_of_claiming_nothing_is_there(machine):
    assert machine.inv("registry.up").returncode == 0
    machine.set_daemon_down(True)
    result = machine.inv("down")
    assert result.returncode == 1
    assert "already done" not in result.stderr + result.stdout
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: `docker rm -f minimal-external` failed with exit code 1 (Cannot connect to the Docker daemon"
        )
    )
    up = machine.inv("registry.up")
    assert up.returncode == 1
    assert up.stderr.strip().splitlines()[-1] == (
        "error: Docker is not running (docker info failed); start the Docker daemon and retry."
    )
    machine.set_daemon_down(False)
    assert machine.inv("down").returncode == 0


def test_istio_18_install_and_uninstall(machine):
    pair = ("--k8s", "1.19", "--istio", "1.8")
    result = machine.inv("istio.install", *pair)
    assert result.returncode == 0, result.stderr
    result = machine.inv("istio.uninstall", *pair)
    assert result.returncode == 0, result.stderr  # the stand-in refuses the top-level form for 1.8
    assert [c for c in machine.log() if "uninstall" in c] == [
        "istioctl x uninstall --context kind-kube-meshy-1-19 --purge -y"
    ]


def test_missing_tool_is_one_clear_sentence(machine, tmp_path):
    only = tmp_path / "only-docker"
    only.mkdir()
    (only / "docker").write_text(f'#!/bin/sh\nexec {harness.BIN / "docker"} "$@"\n')
    (only / "docker").chmod(0o755)
    result = machine.inv("cluster.up", extra={"PATH": f"{only}:/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: kind is not on PATH; install kind")


def test_ingress_controller_install_waits_on_its_rollout(machine):
    result = machine.inv("ingress.install", "--k8s", "1.36", "--istio", "1.30")
    assert result.returncode == 0, result.stderr
    assert (
        "kubectl --context kind-kube-meshy-1-36 -n ingress-nginx rollout status deploy/ingress-nginx-controller --timeout=300s"
        in machine.log()
    )
