"""The cluster path's command plans, run against invoke's MockContext (nothing real is touched)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
from invoke import Result

import tasks
from meshy.kind import steps
from meshy.kind.context import ClusterError, require_free_ports
from meshy.render import Ports, RenderOptions
from meshy.versions import select_pair
from tests.plan import Plan

PLANS = Path(__file__).parent / "testdata" / "plans"


def chain(task, seen: list) -> list:
    """The task and its pre-tasks in invoke's order (pre-tasks first, each once)."""
    for pre in task.pre:
        chain(pre, seen)
    if task not in seen:
        seen.append(task)
    return seen


def run_up(plan: Plan, k8s: str, istio: str) -> None:
    for task in chain(tasks.up, []):
        task(plan.c, k8s=k8s, istio=istio)


@pytest.mark.parametrize(("k8s", "istio"), [("1.19", "1.8"), ("1.36", "1.30")])
def test_up_plan_matches_golden(k8s, istio, capsys):
    plan = Plan()
    run_up(plan, k8s, istio)
    text = "\n".join(plan.commands) + "\n"
    golden = PLANS / f"up-{k8s}-istio-{istio}.txt"
    if os.environ.get("MESHY_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    out = capsys.readouterr().out
    assert "k8s: apply ConfigMap kube-public/local-registry-hosting" in out
    assert "k8s: label Namespace default istio-injection=enabled" in out


def test_up_plan_follows_the_walkthrough_order():
    plan = Plan()
    run_up(plan, "1.19", "1.8")
    commands = plan.commands
    order = [
        "docker run -d --restart=always -p 127.0.0.1:5000:5000 --name kind-registry registry:2",
        "kind create cluster --name kube-meshy-1-19",
        "docker network connect kind kind-registry",
        "istioctl install",
        "samples/addons",
        "patch svc kiali",
        "docker push localhost:5000/minimal-service:v1.0.0",
        "services/minimal-service.yaml",
        "istio/minimal-virtualservice.yaml",
    ]
    positions = [next(i for i, c in enumerate(commands) if fragment in c) for fragment in order]
    assert positions == sorted(positions)
    # 1.19's kind (v0.12) takes the registry mirror as a containerd patch, not hosts.toml.
    assert not any("hosts.toml" in c for c in commands)


def test_ready_environment_changes_nothing(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: f"/usr/bin/{tool}")
    pair = select_pair("1.36", "1.30")
    ready = {
        r"inspect -f '\{\{\.State\.Running\}\}' kind-registry": "true",
        r"kind get clusters": pair.cluster_name,
        r"NetworkSettings.Networks}}' kind-registry": '{"bridge":{},"kind":{}}',
        r"get deploy istiod": f"docker.io/istio/pilot:{pair.istio_release}",
        r"get deploy istio-egressgateway": "deployment.apps/istio-egressgateway",
        r"get deploy grafana jaeger kiali prometheus": "a\nb\nc\nd",
        r"get svc kiali": "30200",
        r"get svc grafana": "30300",
        r"docker image inspect": "sha256:abc",
        r"docker info": "27.0.0",
    }
    plan = Plan(ready, dry=False)
    env = plan.env(pair)
    steps.registry_up(env)
    steps.cluster_up(env)
    steps.istio_install(env)
    steps.addons_install(env)
    steps.images_build(env)
    changing = [c for c in plan.commands if not re.search(r"inspect|get |kind get|docker info", c)]
    # Only the idempotent applies of the istio-system gateway and Kiali route remain.
    assert all("kubectl --context" in c and " apply -f " in c for c in changing), changing
    assert plan.said == ["k8s: apply ConfigMap kube-public/local-registry-hosting (localRegistryHosting.v1)"]


def test_down_removes_everything_up_creates():
    plan = Plan()
    tasks.down_(plan.c, k8s="1.36", istio="1.30")
    actions = [c for c in plan.commands if "inspect" not in c and "get clusters" not in c]
    assert actions == [
        "docker rm -f minimal-external",
        "kind delete cluster --name kube-meshy-1-36",
        "docker rm -f kind-registry",
    ]


def test_down_twice_is_safe_when_nothing_exists():
    plan = Plan(dry=False)
    tasks.down_(plan.c, k8s="1.36", istio="1.30")
    assert not [c for c in plan.commands if "rm -f" in c or "delete cluster" in c]


def test_missing_tool_is_one_clear_sentence(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: None if tool == "kind" else f"/usr/bin/{tool}")
    plan = Plan({r"docker info": "27.0.0"}, dry=False)
    with pytest.raises(ClusterError, match=r"^kind is not on PATH; install kind"):
        steps.cluster_up(plan.env(select_pair()))
    assert not [c for c in plan.commands if "create" in c]


def test_docker_not_running(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: f"/usr/bin/{tool}")
    plan = Plan(dry=False)
    with pytest.raises(ClusterError, match="Docker is not running"):
        steps.registry_up(plan.env(select_pair()))
    assert plan.commands == ["docker info --format '{{.ServerVersion}}'"]


def test_taken_port_stops_before_creating(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        plan = Plan(dry=False)
        env = plan.env(select_pair())
        env.options = RenderOptions(ports=Ports(ingress_host=taken))
        with pytest.raises(ClusterError, match=f"port {taken} \\(Istio ingress\\) is already in use"):
            require_free_ports(env, {"Istio ingress": taken})


def test_failed_command_names_itself():
    plan = Plan(dry=False)
    plan.c.run.side_effect = lambda command, **kw: Result("", exited=1, command=command)
    with pytest.raises(ClusterError, match="`docker network connect kind kind-registry` failed with exit code 1"):
        plan.env(select_pair()).run("docker network connect kind kind-registry")


def test_addons_are_applied_again_until_crds_exist():
    plan = Plan(dry=False)
    attempts = iter([1, 1, 0])

    def answer(command, **kwargs):
        if "samples/addons" in command:
            return Result("", exited=next(attempts), command=command)
        return Result("", command=command)

    plan.c.run.side_effect = answer
    steps.addons_install(plan.env(select_pair()))
    applies = [c for c in plan.commands if "samples/addons" in c]
    waits = [c for c in plan.commands if "condition=established" in c]
    assert len(applies) == 3 and len(waits) == 2


def test_pair_options_reach_pre_tasks():
    environ: dict[str, str] = {}
    tasks.export_pair_options(["inv", "services.deploy", "--k8s", "1.19", "--istio=1.8"], environ)
    assert environ == {"MESHY_K8S": "1.19", "MESHY_ISTIO": "1.8"}


def test_istioctl_missing_is_one_clear_sentence(monkeypatch, tmp_path):
    monkeypatch.setattr(steps, "CACHE", tmp_path)
    plan = Plan(dry=False)
    with pytest.raises(
        ClusterError, match=r"istioctl is missing from .*; run inv istio.download --k8s 1.36 --istio 1.30"
    ):
        steps.istio_install(plan.env(select_pair()))
    assert not [c for c in plan.commands if "install" in c and "istioctl" in c]
