"""Each step of the kind + Istio walkthrough: check, then act only if needed.

Upstream behaviour each step relies on is cited next to it (paths in the
upstream repositories, at the tags of manifests/matrix.yaml).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from meshy import ROOT
from meshy.download import download, extract, istio_artifact
from meshy.kind.context import EXTERNAL, IMAGE, REGISTRY, ClusterError, Env, require_free_ports, require_tools
from meshy.render import render_all

ISTIO_DEPLOYMENTS = ("istiod", "istio-ingressgateway", "istio-egressgateway")
ADDONS = ("grafana", "jaeger", "kiali", "prometheus")
SERVICES = ("minimal-service", "bounced-service", "minimal-service-v2")
ADDON_ATTEMPTS = 5
ROLLOUT_TIMEOUT = "--timeout=300s"
# What docker and kubectl say on stderr when the object asked about does not exist.
NO_CONTAINER = ("No such container", "No such object")
NOT_FOUND = ("NotFound", "not found")


# --- registry -------------------------------------------------------------------------------


def container_status(env: Env, name: str) -> str:
    """docker ps's Status column ("Up 3 minutes", "Exited (0) ..."), empty when there is no such container."""
    # The daemon keeps names with a leading "/": the pattern allows it either way.
    return env.query(["docker", "ps", "-a", "--filter", f"name=^/?{name}$", "--format", "{{.Status}}"])


def registry_up(env: Env) -> None:
    require_tools(env, "docker")
    status = container_status(env, REGISTRY)
    if status.startswith("Up"):
        return env.done(f"registry {REGISTRY} runs at 127.0.0.1:{env.ports.registry}")
    require_free_ports(env, {"local registry": env.ports.registry})
    with env.console.step(f"Starting the local registry {REGISTRY} on 127.0.0.1:{env.ports.registry}"):
        if status:
            env.run(["docker", "start", REGISTRY])
        else:
            env.run(
                [
                    "docker", "run", "-d", "--restart=always", "-p", f"127.0.0.1:{env.ports.registry}:5000",
                    "--name", REGISTRY, "registry:2",
                ]
            )  # fmt: skip


def remove_container(env: Env, name: str, what: str) -> None:
    with env.console.step(f"Removing {what} {name} (if it exists)"):
        removed = env.run(["docker", "rm", "-f", name], absent=NO_CONTAINER)
    if not removed:
        env.done(f"{what} {name} was not there")


def registry_down(env: Env) -> None:
    remove_container(env, REGISTRY, "the registry")


# --- cluster -----------------------------------------------------------------------------------


def check_kind_version(env: Env) -> None:
    """Node images are built for one kind release (kind's release notes list them per release): refuse others."""
    text = env.query(["kind", "version"])
    if not text:
        return  # --dry: nothing ran
    found = re.search(r"\bv\d+\.\d+\.\d+\S*", text)
    version = found.group(0) if found else text.split()[0]
    if version != env.pair.kind:
        raise ClusterError(
            f"kind {version} is on PATH, but {env.pair.node_image.split('@')[0]} is built for kind {env.pair.kind}; "
            f"install kind {env.pair.kind} (https://github.com/kubernetes-sigs/kind/releases/tag/{env.pair.kind})."
        )


def cluster_exists(env: Env) -> bool:
    # `kind get clusters` prints "No kind clusters found." on stderr and exits 0 when there is none, and fails
    # when it cannot list containers (kind pkg/cmd/kind/get/clusters/clusters.go, v0.12.0 and v0.32.0).
    return env.pair.cluster_name in env.query(["kind", "get", "clusters"]).split()


def node_names(env: Env) -> list[str]:
    name = env.pair.cluster_name
    return [f"{name}-control-plane", f"{name}-worker", f"{name}-worker2"]


def cluster_up(env: Env) -> None:
    require_tools(env, "docker", "kind", "kubectl")
    check_kind_version(env)
    with env.console.step(
        f"Rendering manifests for Kubernetes {env.pair.k8s} / Istio {env.pair.istio} into {env.build}"
    ):
        render_all(env.pair, env.build, env.options)
    if cluster_exists(env):
        env.done(f"cluster {env.pair.cluster_name} exists")
    else:
        ports = env.ports
        require_free_ports(
            env,
            {
                "Istio ingress": ports.ingress_host,
                "Istio ingress (HTTPS)": ports.ingress_https_host,
                "Istio ingress (TCP)": ports.tcp_host,
                "Kiali": ports.kiali_host,
                "Grafana": ports.grafana_host,
            },
        )
        with env.console.step(f"Creating kind cluster {env.pair.cluster_name} ({env.pair.node_image.split('@')[0]})"):
            env.run(
                [
                    "kind", "create", "cluster", "--name", env.pair.cluster_name,
                    "--config", str(env.build / "kind/cluster.yaml"), "--wait", "180s",
                ]
            )  # fmt: skip
        if env.pair.registry_mirror == "hosts_dir":
            # kind's kind-with-registry.sh (v0.32.0): one hosts.toml per node under containerd's config_path.
            with env.console.step("Pointing each node's containerd at the local registry"):
                directory = f"/etc/containerd/certs.d/localhost:{ports.registry}"
                toml = f'[host."http://{REGISTRY}:5000"]\n'
                for node in node_names(env):
                    env.run(["docker", "exec", node, "mkdir", "-p", directory])
                    env.run(["docker", "exec", "-i", node, "cp", "/dev/stdin", f"{directory}/hosts.toml"], stdin=toml)
    networks = env.query(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", REGISTRY])
    if '"kind"' in networks:
        env.done(f"registry {REGISTRY} is on the kind network")
    else:
        with env.console.step(f"Connecting {REGISTRY} to the kind network"):
            env.run(["docker", "network", "connect", "kind", REGISTRY])
    with env.console.step("Publishing the local registry to the cluster (KEP-1755 ConfigMap)"):
        env.run(env.kubectl("apply", "-f", "-"), stdin=registry_hosting(env))


def registry_hosting(env: Env) -> str:
    """KEP-1755's local-registry-hosting ConfigMap, as kind's local registry guide publishes it."""
    hosting = f'host: "localhost:{env.ports.registry}"\nhelp: "https://kind.sigs.k8s.io/docs/user/local-registry/"\n'
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "local-registry-hosting", "namespace": "kube-public"},
        "data": {"localRegistryHosting.v1": hosting},
    }
    return yaml.safe_dump(document, sort_keys=False)


def cluster_down(env: Env) -> None:
    # Deleting a cluster that does not exist succeeds; failing to list its nodes (Docker down) does not
    # (kind pkg/cluster/internal/delete/delete.go, v0.12.0 and v0.32.0).
    with env.console.step(f"Deleting kind cluster {env.pair.cluster_name} (if it exists)"):
        env.run(["kind", "delete", "cluster", "--name", env.pair.cluster_name])


def cluster_status(env: Env) -> None:
    if not cluster_exists(env):
        env.console.info(f"cluster {env.pair.cluster_name} does not exist (inv cluster.up creates it)")
        return
    env.run(env.kubectl("get", "nodes", "-o", "wide"))
    env.run(env.kubectl("get", "pods", "-A"))


# --- NGINX ingress -------------------------------------------------------------------------------


# The controller must run on the node that maps host port 80: ingress-nginx's kind manifest pinned it with
# nodeSelector ingress-ready=true up to controller-v0.41.2 and no longer does in controller-v1.13.3
# (deploy/static/provider/kind/deploy.yaml at both tags); a merge patch pins it again on every pair.
PIN_TO_INGRESS_NODE = json.dumps({"spec": {"template": {"spec": {"nodeSelector": {"ingress-ready": "true"}}}}})


def ingress_install(env: Env) -> None:
    exists = env.query(
        env.kubectl(
            "-n", "ingress-nginx", "get", "deploy", "ingress-nginx-controller", "-o", "name", "--ignore-not-found"
        )
    )
    if exists:
        return env.done("NGINX ingress controller is installed")
    url = (
        "https://raw.githubusercontent.com/kubernetes/ingress-nginx/"
        f"{env.pair.ingress_nginx}/deploy/static/provider/kind/deploy.yaml"
    )
    with env.console.step(f"Installing the NGINX ingress controller {env.pair.ingress_nginx}"):
        env.run(env.kubectl("apply", "-f", url))
        env.run(
            env.kubectl(
                "-n", "ingress-nginx", "patch", "deploy", "ingress-nginx-controller", "--type", "merge",
                "-p", PIN_TO_INGRESS_NODE,
            )
        )  # fmt: skip
    wait_rollouts(env, "ingress-nginx", ("ingress-nginx-controller",))
    with env.console.step("Adding minimal-service's Ingress"):
        env.run(env.kubectl("apply", "-f", str(env.build / "ingress/minimal-service-ingress.yaml")))


# --- Istio ---------------------------------------------------------------------------------------


def istio_home(env: Env):
    return env.cache / f"istio-{env.pair.istio_release}"


def istio_download(env: Env):
    home = istio_home(env)
    if (home / "bin" / "istioctl").exists():
        env.done(f"Istio {env.pair.istio_release} is unpacked in {home}")
        return home
    artifact = istio_artifact(env.pair)
    if env.dry:
        check = "the pinned sha256" if artifact.sha256 else f"the sha256 published at {artifact.checksum_url}"
        env.console.info(f"# would download {artifact.url}, verify it against {check}, unpack into {env.cache}")
        return home
    archive = download(artifact, env.cache, env.console)
    with env.console.step(f"Unpacking {archive.name}"):
        return extract(archive, env.cache)


def istioctl(env: Env) -> str:
    return str(istio_home(env) / "bin" / "istioctl")


def istio_install(env: Env) -> None:
    image = env.query(
        env.kubectl(
            "-n", "istio-system", "get", "deploy", "istiod", "--ignore-not-found",
            "-o", "jsonpath={.spec.template.spec.containers[0].image}",
        )
    )  # fmt: skip
    egress = env.query(
        env.kubectl("-n", "istio-system", "get", "deploy", "istio-egressgateway", "-o", "name", "--ignore-not-found")
    )
    if image.endswith(f":{env.pair.istio_release}") and egress:
        return env.done(f"Istio {env.pair.istio_release} with both gateways is installed")
    if not env.dry and not (istio_home(env) / "bin" / "istioctl").exists():
        raise ClusterError(
            f"istioctl is missing from {istio_home(env)}; run inv istio.download --k8s {env.pair.k8s} --istio {env.pair.istio}."
        )
    operator = str(env.build / "kind/istio-operator.yaml")
    with env.console.step(f"Installing Istio {env.pair.istio_release} (default profile + egress gateway)"):
        env.run([istioctl(env), "install", "--context", env.context, "-f", operator, "-y"])
    wait_rollouts(env, "istio-system", ISTIO_DEPLOYMENTS)


def uninstall_command(env: Env) -> list[str]:
    """istioctl 1.8 has `uninstall` only under `x` (istioctl/cmd/root.go: 1.8.6 adds it to experimentalCmd,
    1.28.10 and 1.30.3 to rootCmd)."""
    major, minor = (int(part) for part in env.pair.istio_release.split(".")[:2])
    verb = ["x", "uninstall"] if (major, minor) < (1, 9) else ["uninstall"]
    return [istioctl(env), *verb, "--context", env.context, "--purge", "-y"]


def istio_uninstall(env: Env) -> None:
    with env.console.step("Removing Istio"):
        env.run(uninstall_command(env))
        env.run(env.kubectl("delete", "namespace", "istio-system", "--ignore-not-found"))


def wait_rollouts(env: Env, namespace: str, deployments: tuple[str, ...]) -> None:
    # A rollout waits for its Deployment's pods however late they are created; `kubectl wait --selector`
    # fails at once with "no matching resources found" while no pod exists yet.
    with env.console.step(f"Waiting for {', '.join(deployments)} to be ready"):
        for name in deployments:
            env.run(env.kubectl("-n", namespace, "rollout", "status", f"deploy/{name}", ROLLOUT_TIMEOUT))


# --- add-ons --------------------------------------------------------------------------------------


def addons_install(env: Env) -> None:
    present = env.query(
        env.kubectl("-n", "istio-system", "get", "deploy", *ADDONS, "-o", "name", "--ignore-not-found")
    ).split()
    if len(present) == len(ADDONS):
        env.done("Prometheus, Grafana, Jaeger and Kiali are installed")
    else:
        addons = str(istio_home(env) / "samples/addons")
        with env.console.step("Installing Prometheus, Grafana, Jaeger and Kiali"):
            # Istio 1.8.6's kiali.yaml holds Kiali's CRD and custom resources of it: the first apply fails
            # until the CRD is established, so wait for CRDs and apply again (the walkthrough's "re-run").
            for attempt in range(1, ADDON_ATTEMPTS + 1):
                if env.runner(env.kubectl("apply", "-f", addons), None, capture=False).exited == 0:
                    break
                if attempt == ADDON_ATTEMPTS:
                    raise ClusterError(
                        f"the add-ons did not apply after {ADDON_ATTEMPTS} attempts; see the errors above."
                    )
                env.run(env.kubectl("wait", "--for", "condition=established", "--timeout=60s", "crd", "--all"))
        wait_rollouts(env, "istio-system", ADDONS)
    expose(env, "kiali", env.ports.kiali_node)
    expose(env, "grafana", env.ports.grafana_node)
    with env.console.step("Routing *.istio.kind.org through the ingress gateway to Kiali"):
        env.run(env.kubectl("apply", "-f", str(env.build / "istio/services-gateway-istio.yaml")))
        env.run(env.kubectl("apply", "-f", str(env.build / "istio/kiali-virtualservice.yaml")))


def expose(env: Env, service: str, node_port: int) -> None:
    current = env.query(
        env.kubectl("-n", "istio-system", "get", "svc", service, "-o", "jsonpath={.spec.ports[0].nodePort}")
    )
    if current == str(node_port):
        return env.done(f"{service} is exposed on node port {node_port}")
    patch = json.dumps(
        [
            {"op": "replace", "path": "/spec/type", "value": "NodePort"},
            {"op": "add", "path": "/spec/ports/0/nodePort", "value": node_port},
        ]
    )
    with env.console.step(f"Exposing {service} on node port {node_port}"):
        env.run(env.kubectl("-n", "istio-system", "patch", "svc", service, "--type", "json", "-p", patch))


# --- mesh, image, services ------------------------------------------------------------------------


def mesh_enable(env: Env) -> None:
    with env.console.step("Labelling namespace default for sidecar injection"):
        env.run(env.kubectl("label", "namespace", "default", "istio-injection=enabled", "--overwrite"))


def image_tag(env: Env) -> str:
    return f"localhost:{env.ports.registry}/{IMAGE}"


def image_in_registry(env: Env) -> bool:
    """Whether the registry holds the image: a registry recreated by `inv down` is empty even when the
    local Docker still has the image (distribution's API: GET /v2/<name>/tags/list, 404 for an unknown name).
    The registry image is Alpine-based (distribution/distribution-library-image Dockerfile): busybox wget asks."""
    name, tag = IMAGE.split(":")
    tags = env.query(
        ["docker", "exec", REGISTRY, "wget", "-q", "-O", "-", f"http://127.0.0.1:5000/v2/{name}/tags/list"],
        absent=("404",),
    )
    try:
        return tag in (json.loads(tags).get("tags") or [])
    except ValueError:
        return False


def images_build(env: Env, rebuild: bool = False) -> None:
    require_tools(env, "docker")
    if not rebuild and image_in_registry(env):
        return env.done(f"image {image_tag(env)} is in the registry (--rebuild to build again)")
    with env.console.step(f"Building {IMAGE} and pushing it as {image_tag(env)}"):
        env.run(["docker", "build", "-f", str(ROOT / "minimal_service/Dockerfile"), "-t", IMAGE, str(ROOT)])
        env.run(["docker", "tag", IMAGE, image_tag(env)])
        env.run(["docker", "push", image_tag(env)])


def services_deploy(env: Env) -> None:
    with env.console.step("Deploying minimal-service, bounced-service and minimal-service-v2"):
        for name in SERVICES:
            env.run(env.kubectl("apply", "-f", str(env.build / "services" / f"{name}.yaml")))
    wait_rollouts(env, "default", SERVICES)
    with env.console.step("Checking that every pod runs its app and a ready istio-proxy"):
        text = env.query(
            env.kubectl("-n", "default", "get", "pods", "-l", "app in (minimal-service,bounced-service)", "-o", "json")
        )
        problems = [problem for pod in json.loads(text or '{"items": []}')["items"] if (problem := pod_problem(pod))]
        if problems:
            raise ClusterError(f"{problems[0]}; is namespace default labelled for injection (inv mesh.enable)?")


def pod_problem(pod: dict) -> str | None:
    """Why a pod is not an app with a ready Istio proxy, or None.

    Istio 1.28 and 1.30 inject istio-proxy as a native sidecar (an init container with
    restartPolicy Always) on Kubernetes >= 1.33, so the pod shows 1/1; Istio 1.8 adds it as a second
    container (pkg/kube/inject/webhook.go: DetectNativeSidecar at 1.28.10 and 1.30.3).
    """
    name = pod["metadata"]["name"]
    status = pod.get("status", {})
    statuses = status.get("containerStatuses", []) + status.get("initContainerStatuses", [])
    ready = {s["name"] for s in statuses if s.get("ready")}
    if "istio-proxy" not in ready:
        return f"pod {name} has no ready istio-proxy (neither a sidecar container nor a native sidecar)"
    apps = [c["name"] for c in pod["spec"]["containers"] if c["name"] != "istio-proxy"]
    if not apps or any(app not in ready for app in apps):
        return f"pod {name}'s app container is not ready"
    return None


def baseline(env: Env) -> None:
    with env.console.step("Applying services-gateway and minimal-virtualservice"):
        env.run(env.kubectl("apply", "-f", str(env.build / "istio/services-gateway.yaml")))
        env.run(env.kubectl("apply", "-f", str(env.build / "istio/minimal-virtualservice.yaml")))


def external_tls_dir(env: Env) -> Path:
    """The external container's CA, certificate and key, made on the first start and kept in the cache."""
    return env.cache / "external-tls"


def external_up(env: Env) -> str:
    """Run the walkthrough's external service on the kind network, plain and over TLS; return its address."""
    if not container_status(env, EXTERNAL).startswith("Up"):
        with env.console.step(f"Starting the external service {EXTERNAL} outside the mesh"):
            env.run(["docker", "rm", "-f", EXTERNAL], absent=NO_CONTAINER)
            tls = external_tls_dir(env)
            if not env.dry:
                from meshy.scenarios.certificates import external_credentials  # loads cryptography

                external_credentials(tls, env.options.external.host)
            # The files are owner-only: the container runs as their owner to read them.
            mounted = "/etc/external-tls"
            env.run(
                [
                    "docker", "run", "-d", "--network", "kind", "-e", "SERVICE_ADDRESS=0.0.0.0",
                    "--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{tls}:{mounted}:ro",
                    "-e", f"TLS_PORT={env.options.external.tls_port}",
                    "-e", f"TLS_CERT_FILE={mounted}/tls.crt", "-e", f"TLS_KEY_FILE={mounted}/tls.key",
                    "--name", EXTERNAL, image_tag(env),
                ]
            )  # fmt: skip
    address = env.query(["docker", "inspect", "-f", "{{.NetworkSettings.Networks.kind.IPAddress}}", EXTERNAL])
    if address:
        return address
    if env.dry:
        return "EXTERNAL_IP"
    raise ClusterError(f"{EXTERNAL} has no address on the kind network; check `docker logs {EXTERNAL}`.")


def external_down(env: Env) -> None:
    remove_container(env, EXTERNAL, "the external service")
