"""Each step of the kind + Istio walkthrough: check, then act only if needed."""

from __future__ import annotations

import json

from meshy import ROOT
from meshy.download import CACHE, download, extract, istio_artifact
from meshy.kind.context import EXTERNAL, IMAGE, REGISTRY, ClusterError, Env, require_free_ports, require_tools
from meshy.render import render_all

ISTIO_DEPLOYMENTS = ("istiod", "istio-ingressgateway", "istio-egressgateway")
ADDONS = ("grafana", "jaeger", "kiali", "prometheus")
SERVICES = ("minimal-service", "bounced-service", "minimal-service-v2")
ADDON_ATTEMPTS = 5


# --- registry -------------------------------------------------------------------------------


def registry_up(env: Env) -> None:
    require_tools(env, "docker")
    state = env.query(f"docker inspect -f '{{{{.State.Running}}}}' {REGISTRY}")
    if state == "true":
        return env.done(f"registry {REGISTRY} runs at 127.0.0.1:{env.ports.registry}")
    require_free_ports(env, {"local registry": env.ports.registry})
    with env.console.step(f"Starting the local registry {REGISTRY} on 127.0.0.1:{env.ports.registry}"):
        if state == "false":
            env.run(f"docker start {REGISTRY}")
        else:
            env.run(
                f"docker run -d --restart=always -p 127.0.0.1:{env.ports.registry}:5000 --name {REGISTRY} registry:2"
            )


def registry_down(env: Env) -> None:
    if not env.query(f"docker inspect -f '{{{{.Id}}}}' {REGISTRY}") and not env.dry:
        return env.done(f"registry {REGISTRY} is not there")
    with env.console.step(f"Removing the registry {REGISTRY}"):
        env.run(f"docker rm -f {REGISTRY}")


# --- cluster -----------------------------------------------------------------------------------


def cluster_exists(env: Env) -> bool:
    return env.pair.cluster_name in env.query("kind get clusters").split()


def node_names(env: Env) -> list[str]:
    name = env.pair.cluster_name
    return [f"{name}-control-plane", f"{name}-worker", f"{name}-worker2"]


def cluster_up(env: Env) -> None:
    require_tools(env, "docker", "kind", "kubectl")
    with env.console.step(
        f"Rendering manifests for Kubernetes {env.pair.k8s} / Istio {env.pair.istio} into {env.build}"
    ):
        render_all(env.pair, env.build, env.options)
    if cluster_exists(env):
        env.done(f"cluster {env.pair.cluster_name} exists")
    else:
        ports = env.ports
        require_free_ports(
            env, {"Istio ingress": ports.ingress_host, "Kiali": ports.kiali_host, "Grafana": ports.grafana_host}
        )
        with env.console.step(f"Creating kind cluster {env.pair.cluster_name} ({env.pair.node_image.split('@')[0]})"):
            env.run(
                f"kind create cluster --name {env.pair.cluster_name} --config {env.build / 'kind/cluster.yaml'} --wait 180s"
            )
        if env.pair.registry_mirror == "hosts_dir":
            with env.console.step("Pointing each node's containerd at the local registry"):
                for node in node_names(env):
                    directory = f"/etc/containerd/certs.d/localhost:{ports.registry}"
                    env.run(f"docker exec {node} mkdir -p {directory}")
                    toml = f'[host."http://{REGISTRY}:5000"]'
                    env.run(f"docker exec -i {node} cp /dev/stdin {directory}/hosts.toml", stdin=toml + "\n")
    networks = env.query(f"docker inspect -f '{{{{json .NetworkSettings.Networks}}}}' {REGISTRY}")
    if '"kind"' in networks:
        env.done(f"registry {REGISTRY} is on the kind network")
    else:
        with env.console.step(f"Connecting {REGISTRY} to the kind network"):
            env.run(f"docker network connect kind {REGISTRY}")
    with env.console.step("Publishing the local registry to the cluster (KEP-1755 ConfigMap)"):
        hosting = (
            f'host: "localhost:{env.ports.registry}"\nhelp: "https://kind.sigs.k8s.io/docs/user/local-registry/"\n'
        )
        result = env.kube.apply_config_map(
            "kube-public", "local-registry-hosting", {"localRegistryHosting.v1": hosting}
        )
        env.console.info(f"   local-registry-hosting {result}")


def cluster_down(env: Env) -> None:
    if not cluster_exists(env) and not env.dry:
        return env.done(f"cluster {env.pair.cluster_name} is not there")
    with env.console.step(f"Deleting kind cluster {env.pair.cluster_name}"):
        env.run(f"kind delete cluster --name {env.pair.cluster_name}")


def cluster_status(env: Env) -> None:
    if not cluster_exists(env):
        env.console.info(f"cluster {env.pair.cluster_name} does not exist (inv cluster.up creates it)")
        return
    env.run(env.kubectl("get nodes -o wide"))
    env.run(env.kubectl("get pods -A"))


# --- NGINX ingress -------------------------------------------------------------------------------


def ingress_install(env: Env) -> None:
    if env.query(env.kubectl("-n ingress-nginx get deploy ingress-nginx-controller -o name")):
        return env.done("NGINX ingress controller is installed")
    url = (
        "https://raw.githubusercontent.com/kubernetes/ingress-nginx/"
        f"{env.pair.ingress_nginx}/deploy/static/provider/kind/deploy.yaml"
    )
    with env.console.step(f"Installing the NGINX ingress controller {env.pair.ingress_nginx}"):
        env.run(env.kubectl(f"apply -f {url}"))
        env.run(
            env.kubectl(
                "wait -n ingress-nginx --for=condition=ready pod "
                "--selector=app.kubernetes.io/component=controller --timeout=300s"
            )
        )
    with env.console.step("Adding minimal-service's Ingress"):
        env.run(env.kubectl(f"apply -f {env.build / 'ingress/minimal-service-ingress.yaml'}"))


# --- Istio ---------------------------------------------------------------------------------------


def istio_home(env: Env):
    return CACHE / f"istio-{env.pair.istio_release}"


def istio_download(env: Env):
    artifact = istio_artifact(env.pair)
    if env.dry:
        check = "the pinned sha256" if artifact.sha256 else f"the sha256 published at {artifact.checksum_url}"
        env.console.info(f"would download {artifact.url}, verify it against {check}, unpack into {CACHE}")
        return istio_home(env)
    archive = download(artifact, CACHE, env.console)
    with env.console.step(f"Unpacking {archive.name}"):
        home = extract(archive, CACHE)
    return home


def istioctl(env: Env) -> str:
    return str(istio_home(env) / "bin" / "istioctl")


def istio_install(env: Env) -> None:
    image = env.query(
        env.kubectl("-n istio-system get deploy istiod -o jsonpath='{.spec.template.spec.containers[0].image}'")
    )
    egress = env.query(env.kubectl("-n istio-system get deploy istio-egressgateway -o name"))
    if image.endswith(f":{env.pair.istio_release}") and egress:
        return env.done(f"Istio {env.pair.istio_release} with both gateways is installed")
    operator = env.build / "kind/istio-operator.yaml"
    if not env.dry and not (istio_home(env) / "bin" / "istioctl").exists():
        raise ClusterError(
            f"istioctl is missing from {istio_home(env)}; run inv istio.download --k8s {env.pair.k8s} --istio {env.pair.istio}."
        )
    with env.console.step(f"Installing Istio {env.pair.istio_release} (default profile + egress gateway)"):
        env.run(f"{istioctl(env)} install {env.context_flag} -f {operator} -y")
    wait_rollouts(env, "istio-system", ISTIO_DEPLOYMENTS)


def istio_uninstall(env: Env) -> None:
    if not env.query(env.kubectl("get namespace istio-system -o name")) and not env.dry:
        return env.done("Istio is not installed")
    with env.console.step("Removing Istio"):
        env.run(f"{istioctl(env)} uninstall {env.context_flag} --purge -y")
        env.run(env.kubectl("delete namespace istio-system --ignore-not-found"))


def wait_rollouts(env: Env, namespace: str, deployments: tuple[str, ...]) -> None:
    with env.console.step(f"Waiting for {', '.join(deployments)} to be ready"):
        for name in deployments:
            env.run(env.kubectl(f"-n {namespace} rollout status deploy/{name} --timeout=300s"))


# --- add-ons --------------------------------------------------------------------------------------


def addons_install(env: Env) -> None:
    present = env.query(env.kubectl(f"-n istio-system get deploy {' '.join(ADDONS)} -o name")).split()
    if len(present) == len(ADDONS):
        env.done("Prometheus, Grafana, Jaeger and Kiali are installed")
    else:
        addons = istio_home(env) / "samples/addons"
        with env.console.step("Installing Prometheus, Grafana, Jaeger and Kiali"):
            # The first apply can fail until Kiali's CRDs are established: wait for them and apply again.
            for attempt in range(1, ADDON_ATTEMPTS + 1):
                result = env.c.run(env.kubectl(f"apply -f {addons}"), warn=True, pty=False)
                if env.dry or result is None or result.exited == 0:
                    break
                if attempt == ADDON_ATTEMPTS:
                    raise ClusterError(
                        f"the add-ons did not apply after {ADDON_ATTEMPTS} attempts; see the errors above."
                    )
                env.run(env.kubectl("wait --for condition=established --timeout=60s crd --all"))
        wait_rollouts(env, "istio-system", ADDONS)
    expose(env, "kiali", env.ports.kiali_node)
    expose(env, "grafana", env.ports.grafana_node)
    with env.console.step("Routing *.istio.kind.org through the ingress gateway to Kiali"):
        env.run(env.kubectl(f"apply -f {env.build / 'istio/services-gateway-istio.yaml'}"))
        env.run(env.kubectl(f"apply -f {env.build / 'istio/kiali-virtualservice.yaml'}"))


def expose(env: Env, service: str, node_port: int) -> None:
    current = env.query(env.kubectl(f"-n istio-system get svc {service} -o jsonpath='{{.spec.ports[0].nodePort}}'"))
    if current == str(node_port):
        return env.done(f"{service} is exposed on node port {node_port}")
    patch = json.dumps(
        [
            {"op": "replace", "path": "/spec/type", "value": "NodePort"},
            {"op": "add", "path": "/spec/ports/0/nodePort", "value": node_port},
        ]
    )
    with env.console.step(f"Exposing {service} on node port {node_port}"):
        env.run(env.kubectl(f"-n istio-system patch svc {service} --type json -p '{patch}'"))


# --- mesh, image, services ------------------------------------------------------------------------


def mesh_enable(env: Env) -> None:
    with env.console.step("Labelling namespace default for sidecar injection"):
        result = env.kube.label_namespace("default", "istio-injection", "enabled")
        env.console.info(f"   namespace default {result}")


def image_tag(env: Env) -> str:
    return f"localhost:{env.ports.registry}/{IMAGE}"


def images_build(env: Env, rebuild: bool = False) -> None:
    require_tools(env, "docker")
    if not rebuild and env.query(f"docker image inspect -f '{{{{.Id}}}}' {image_tag(env)}"):
        return env.done(f"image {image_tag(env)} is built (--rebuild to build again)")
    with env.console.step(f"Building {IMAGE} and pushing it as {image_tag(env)}"):
        env.run(f"docker build -f {ROOT / 'minimal_service/Dockerfile'} -t {IMAGE} {ROOT}")
        env.run(f"docker tag {IMAGE} {image_tag(env)}")
        env.run(f"docker push {image_tag(env)}")


def services_deploy(env: Env) -> None:
    with env.console.step("Deploying minimal-service, bounced-service and minimal-service-v2"):
        for name in SERVICES:
            env.run(env.kubectl(f"apply -f {env.build / 'services' / (name + '.yaml')}"))
    wait_rollouts(env, "default", SERVICES)
    with env.console.step("Checking that every pod runs its app and an injected sidecar (2/2)"):
        for name, ready in env.kube.pods_ready("default", "app in (minimal-service,bounced-service)"):
            if ready != "2/2":
                raise ClusterError(
                    f"pod {name} runs {ready} containers, not 2/2; is namespace default labelled for injection?"
                )


def baseline(env: Env) -> None:
    with env.console.step("Applying services-gateway and minimal-virtualservice"):
        env.run(env.kubectl(f"apply -f {env.build / 'istio/services-gateway.yaml'}"))
        env.run(env.kubectl(f"apply -f {env.build / 'istio/minimal-virtualservice.yaml'}"))


def external_up(env: Env) -> str:
    """Run the walkthrough's external service on the kind network; return its address."""
    if env.query(f"docker inspect -f '{{{{.State.Running}}}}' {EXTERNAL}") != "true":
        with env.console.step(f"Starting the external service {EXTERNAL} outside the mesh"):
            env.run(f"docker rm -f {EXTERNAL}")
            env.run(f"docker run -d --network kind -e SERVICE_ADDRESS=0.0.0.0 --name {EXTERNAL} {image_tag(env)}")
    return (
        env.query(f"docker inspect -f '{{{{.NetworkSettings.Networks.kind.IPAddress}}}}' {EXTERNAL}") or "EXTERNAL_IP"
    )


def external_down(env: Env) -> None:
    if env.query(f"docker inspect -f '{{{{.Id}}}}' {EXTERNAL}") or env.dry:
        with env.console.step(f"Removing the external service {EXTERNAL}"):
            env.run(f"docker rm -f {EXTERNAL}")
