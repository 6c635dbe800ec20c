"""Deployments roll like Kubernetes on the local backend: real traffic through the ingress never fails.

The old code stopped the old pod before the new one served (seconds of 503s
at 200 req/s); these tests count every failed request during the change.
"""

from __future__ import annotations

import time

import pytest
import yaml

from meshy.bench import PacedLoad
from meshy.local import topology
from meshy.local.model import Pod
from meshy.render import render
from tests.local_mesh import Mesh, running

RATE = 200  # requests per second through the ingress
WORKERS = 4


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with running(tmp_path_factory.mktemp("rollout") / "state") as m:
        yield m


def deployment(mesh: Mesh, replicas: int = 1, **env: str) -> str:
    """minimal-service's Deployment from the walkthrough, with replicas and extra env set."""
    documents = list(yaml.safe_load_all(render("services/minimal-service.yaml.j2", mesh.pair)))
    item = next(d for d in documents if d["kind"] == "Deployment")
    item["spec"]["replicas"] = replicas
    item["spec"]["template"]["spec"]["containers"][0]["env"] += [{"name": k, "value": v} for k, v in env.items()]
    return yaml.safe_dump(item)


def load(mesh: Mesh) -> PacedLoad:
    """RATE requests per second through the ingress, every failure and every answering pod kept."""
    url = mesh.backend.ingress_url + "/"
    return PacedLoad(url, RATE, host="minimal.svc.kind.org", clients=WORKERS, track_servers=True)


def pods_of(mesh: Mesh) -> list[Pod]:
    return [pod for pod in mesh.backend.pods() if pod.deployment == "minimal-service"]


def test_rollout_under_load_fails_no_request(mesh):
    mesh.apply(deployment(mesh, replicas=2))
    old = {pod.name for pod in pods_of(mesh)}
    assert len(old) == 2
    with load(mesh) as traffic:
        time.sleep(0.5)  # old pods serve first
        assert mesh.apply(deployment(mesh, replicas=2, ROLLOUT="2"))[:1] == [
            "Deployment default/minimal-service configured"
        ]
        time.sleep(0.5)  # and new ones after
    new = {pod.name for pod in pods_of(mesh)}
    assert len(new) == 2 and not new & old
    assert traffic.outcome.failures == []
    assert traffic.outcome.ok > RATE  # the rollout really ran under load
    served = traffic.outcome.served_by
    assert old <= served and new <= served  # traffic moved from the old pods to the new
    # the old pods are gone: no process and no endpoint
    processes = {p.name for p in mesh.backend.supervisor.processes()}
    assert not {f"app_{name}" for name in old} & processes
    assert all(mesh.get().json()["servedBy"] in new for _ in range(20))


def test_scaling_up_and_down_keeps_serving_and_zero_replicas_is_allowed(mesh):
    with load(mesh) as traffic:
        mesh.apply(deployment(mesh, replicas=3, ROLLOUT="2"))
        assert len(pods_of(mesh)) == 3
        mesh.apply(deployment(mesh, replicas=1, ROLLOUT="2"))
    assert len(pods_of(mesh)) == 1
    assert traffic.outcome.failures == []
    assert mesh.apply(deployment(mesh, replicas=0, ROLLOUT="2"))[:1] == [
        "Deployment default/minimal-service configured"
    ]
    assert pods_of(mesh) == []
    response = mesh.get()
    assert response.status_code == 503  # a Service without endpoints, as on a cluster
    mesh.apply(deployment(mesh, replicas=1))
    assert mesh.get().status_code == 200


def test_rollout_steps_follow_the_default_surge():
    def pod(name: str, deployment: str = "d") -> Pod:
        return Pod(name, "default", deployment, {}, "127.0.0.1", "127.0.0.2", (), {}, "img", None)

    new = [pod(f"n{i}") for i in range(8)]
    old = [pod(f"o{i}") for i in range(8)]
    steps = topology.rollout_steps(new, old, {"d": 8})
    # 25% of 8 rounded up: two new pods per step, two old ones retired after them
    assert [(len(s), len(r)) for s, r in steps] == [(2, 2)] * 4
    assert [p.name for s, _ in steps for p in s] == [p.name for p in new]
    # a new Deployment starts at once, a deleted one stops at once
    fresh = topology.rollout_steps(new, [], {"d": 8})
    assert [(len(s), len(r)) for s, r in fresh] == [(8, 0)]
    gone = topology.rollout_steps([], [pod("x", "e"), pod("y", "e")], {})
    assert [(len(s), len(r)) for s, r in gone] == [(0, 2)]
    # rolled and scaled down 8 -> 2: one new pod per step; the six old pods not needed go first
    shrink = topology.rollout_steps(new[:2], old, {"d": 2})
    assert [(len(s), len(r)) for s, r in shrink] == [(1, 7), (1, 1)]
    assert [p.name for _, r in shrink for p in r] == [p.name for p in old]


def test_forty_pods_start_and_each_serves(mesh):
    # File-watching proxies stopped at about 30 pods (inotify instances per user).
    mesh.apply(deployment(mesh, replicas=40, WIDE="1"))
    names = {pod.name for pod in pods_of(mesh)}
    assert len(names) == 40
    # Uniform choice among 40: each pod misses 600 requests with probability (39/40)^600 < 1e-6.
    served = {mesh.get().json()["servedBy"] for _ in range(600)}
    assert served == names
    mesh.apply(deployment(mesh, replicas=1))
    assert len(pods_of(mesh)) == 1
    assert mesh.get().status_code == 200
