"""Single steps of the cluster path with a recording runner: decisions that need no stand-in process.

The entry points themselves (`inv ...`, the nox sessions) run against the
stand-ins in tests/test_standin_runs.py.
"""

from __future__ import annotations

import json
import socket

import pytest

from meshy.kind import steps
from meshy.kind.context import ClusterError, Completed, require_free_ports
from meshy.render import Ports, RenderOptions
from meshy.versions import select_pair
from tests.plan import Plan

DOCKER_DOWN = Completed(1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")


def pod(name: str, containers: list[str], init: list[str] = (), ready: tuple[str, ...] = ()) -> dict:
    """A pod as `kubectl get pods -o json` prints it (only the fields the check reads)."""
    statuses = [{"name": c, "ready": c in ready} for c in containers]
    init_statuses = [{"name": c, "ready": c in ready} for c in init]
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": c} for c in containers], "initContainers": [{"name": c} for c in init]},
        "status": {"containerStatuses": statuses, "initContainerStatuses": init_statuses},
    }


def test_native_sidecar_pods_pass_and_pods_without_a_ready_proxy_fail():
    native = pod("a", ["minimal-service"], ["istio-proxy"], ("minimal-service", "istio-proxy"))
    classic = pod("b", ["minimal-service", "istio-proxy"], (), ("minimal-service", "istio-proxy"))
    assert steps.pod_problem(native) is None  # 1/1 READY on Kubernetes >= 1.33 with Istio 1.28/1.30
    assert steps.pod_problem(classic) is None
    assert "no ready istio-proxy" in steps.pod_problem(pod("c", ["minimal-service"], (), ("minimal-service",)))
    not_ready = pod("d", ["minimal-service"], ["istio-proxy"], ("minimal-service",))
    assert "no ready istio-proxy" in steps.pod_problem(not_ready)
    assert "app container is not ready" in steps.pod_problem(
        pod("e", ["minimal-service", "istio-proxy"], (), ("istio-proxy",))
    )


def test_services_deploy_names_the_pod_without_a_proxy():
    pods = {"items": [pod("minimal-service-1", ["minimal-service"], (), ("minimal-service",))]}
    plan = Plan({r"get pods": json.dumps(pods)})
    with pytest.raises(ClusterError, match=r"^pod minimal-service-1 has no ready istio-proxy .*inv mesh.enable"):
        steps.services_deploy(plan.env(select_pair()))


def test_a_failed_query_is_not_an_absence():
    plan = Plan({r"docker": DOCKER_DOWN})
    with pytest.raises(ClusterError, match=r"^`docker rm -f kind-registry` failed with exit code 1 \(Cannot connect"):
        steps.registry_down(plan.env(select_pair()))
    plan = Plan({r"kind get clusters": Completed(1, "", "ERROR: failed to list clusters")})
    with pytest.raises(ClusterError, match="failed to list clusters"):
        steps.cluster_exists(plan.env(select_pair()))


def test_absent_containers_are_reported_as_absent():
    plan = Plan({r"docker rm": Completed(1, "", "Error response from daemon: No such container: kind-registry")})
    steps.registry_down(plan.env(select_pair()))  # no error: nothing to remove
    assert plan.commands == ["docker rm -f kind-registry"]


def test_kind_release_must_match_the_pair():
    pair = select_pair("1.19", "1.8")
    steps.check_kind_version(Plan({r"kind version": "kind v0.12.0 go1.17.5 linux/amd64"}).env(pair))
    with pytest.raises(
        ClusterError, match=r"^kind v0.32.0 is on PATH, but kindest/node:v1.19.16 is built for kind v0.12.0"
    ):
        steps.check_kind_version(Plan({r"kind version": "kind v0.32.0 go1.24 linux/amd64"}).env(pair))


def test_image_is_pushed_unless_the_registry_has_it():
    listed = json.dumps({"name": "minimal-service", "tags": ["v1.0.0"]})
    plan = Plan({r"tags/list": listed})
    steps.images_build(plan.env(select_pair(), dry=True))
    assert not [c for c in plan.commands if "push" in c]
    missing = Completed(1, "", "wget: server returned error: HTTP/1.1 404 Not Found")
    plan = Plan({r"tags/list": missing, r"image inspect": "sha256:abc"})  # the local image exists
    steps.images_build(plan.env(select_pair(), dry=True))
    assert plan.commands[-1] == "docker push localhost:5000/minimal-service:v1.0.0"


def test_istio_18_uninstalls_through_x():
    plan = Plan()
    steps.istio_uninstall(plan.env(select_pair("1.19", "1.8")))
    assert " x uninstall --context kind-kube-meshy-1-19 --purge -y" in plan.commands[0]
    plan = Plan()
    steps.istio_uninstall(plan.env(select_pair("1.36", "1.30")))
    assert "/istioctl uninstall --context kind-kube-meshy-1-36 --purge -y" in plan.commands[0]


def test_ingress_controller_is_pinned_to_the_mapped_node_and_awaited_by_rollout():
    plan = Plan()
    steps.ingress_install(plan.env(select_pair("1.36", "1.30")))
    patch = next(c for c in plan.commands if " patch deploy ingress-nginx-controller" in c)
    assert '"nodeSelector": {"ingress-ready": "true"}' in patch
    assert (
        "kubectl --context kind-kube-meshy-1-36 -n ingress-nginx rollout status deploy/ingress-nginx-controller --timeout=300s"
        in plan.commands
    )
    assert not [c for c in plan.commands if " wait " in c]


def test_taken_port_stops_before_creating():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        env = Plan().env(select_pair())
        env.options = RenderOptions(ports=Ports(ingress_host=taken))
        with pytest.raises(ClusterError, match=f"port {taken} \\(Istio ingress\\) is already in use"):
            require_free_ports(env, {"Istio ingress": taken})


def test_failed_command_names_itself():
    plan = Plan({r".": Completed(1, "", "")})
    with pytest.raises(ClusterError, match="`docker network connect kind kind-registry` failed with exit code 1"):
        plan.env(select_pair()).run(["docker", "network", "connect", "kind", "kind-registry"])


def test_addons_are_applied_again_until_crds_exist():
    attempts = iter([1, 1, 0])

    class Racing(Plan):
        def __call__(self, argv, stdin, capture):
            result = super().__call__(argv, stdin, capture)
            return Completed(next(attempts)) if "samples/addons" in argv[-1] else result

    plan = Racing()
    steps.addons_install(plan.env(select_pair()))
    applies = [c for c in plan.commands if "samples/addons" in c]
    waits = [c for c in plan.commands if "condition=established" in c]
    assert len(applies) == 3 and len(waits) == 2


def test_istioctl_missing_is_one_clear_sentence(tmp_path):
    plan = Plan()
    env = plan.env(select_pair())
    env.cache = tmp_path
    with pytest.raises(
        ClusterError, match=r"istioctl is missing from .*; run inv istio.download --k8s 1.36 --istio 1.30"
    ):
        steps.istio_install(env)
    assert not [c for c in plan.commands if "istioctl" in c]


def test_host_ports_move_together_with_the_image():
    ports = Ports.from_env("ingress=18080,registry=15000")
    assert (ports.ingress_host, ports.registry, ports.kiali_host) == (18080, 15000, 8081)
    assert RenderOptions.for_kind(ports).image == "localhost:15000/minimal-service:v1.0.0"
    with pytest.raises(ValueError, match=r"^MESHY_HOST_PORTS item 'ingress=x' is not NAME=PORT"):
        Ports.from_env("ingress=x")
