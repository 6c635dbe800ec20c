"""Recording stand-ins for docker, kind, kubectl and istioctl: the edge this machine cannot reach.

`tests/standins/bin/<tool>` runs `standin.py <tool> ARGS...`. Each call is
appended to $MESHY_STANDIN_STATE/commands.log (the command line as the
cluster path prints it under --dry) and answered from a small JSON model of
containers, clusters and Kubernetes objects. What a real cluster would serve
- the ingress gateway, the proxies' admin API, the apps - comes from a real
local mesh (meshy.local, real Envoy) started by `istioctl install`, so the
scenarios measure real traffic.

Each behaviour that matters to the cluster path cites where it shows
upstream (paths at the tags of manifests/matrix.yaml). This is a test double:
a run against it is never a real e2e run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from meshy.metrics import istio, prometheus  # noqa: E402
from meshy.versions import Pair, load_matrix  # noqa: E402

STATE = Path(os.environ.get("MESHY_STANDIN_STATE", ROOT / ".standins"))
LOCAL_KINDS = {
    "Deployment",
    "Service",
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
    "Secret",
}
# docker CLI's answer when the daemon does not answer.
DAEMON_DOWN = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
# The Envoy stats an Istio proxy keeps by default: requiredEnvoyStatsMatcherInclusionPrefixes in
# pkg/bootstrap/config.go (1.8.6, 1.28.10, 1.30.3); per-cluster counters such as
# cluster.outbound|...upstream_rq_total are not among them.
DEFAULT_STATS = ("cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm")
DEFAULT_PROMETHEUS = ("envoy_cluster_manager_", "envoy_listener_manager_", "envoy_server_", "envoy_wasm")
KIALI_ADDRESS_BLOCK_OFFSET = 3  # the local mesh's external block (127.(base+3).x.x); Kiali takes .200.1 there


class Fail(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --- state -------------------------------------------------------------------------------------


def load() -> dict:
    path = STATE / "state.json"
    if path.exists():
        return json.loads(path.read_text())
    return {"daemon_down": False, "containers": {}, "networks": [], "images": [], "registry": [], "clusters": {}}


def save(state: dict) -> None:
    path = STATE / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def record(tool: str, args: list[str]) -> None:
    with (STATE / "commands.log").open("a") as log:
        log.write(shlex.join([tool, *args]) + "\n")


def pair_of_cluster(name: str) -> Pair:
    for pair in load_matrix():
        if pair.cluster_name == name:
            return pair
    raise Fail(f"stand-in: no matrix pair has cluster {name}")


def minor(version: str) -> int:
    return int(version.split(".")[1])


# --- docker ------------------------------------------------------------------------------------


def docker(state: dict, args: list[str], stdin: str) -> str:
    if state["daemon_down"]:
        raise Fail(DAEMON_DOWN)
    command, rest = args[0], args[1:]
    containers = state["containers"]
    if command == "info":
        return "27.3.1\n"
    if command == "ps":
        # `docker ps -a --filter name=^/?NAME$ --format {{.Status}}`: empty output when nothing matches.
        name = next(a for a in rest if a.startswith("name=")).removeprefix("name=^/?").removesuffix("$")
        container = containers.get(name)
        if container is None:
            return ""
        return ("Up 2 minutes" if container["running"] else "Exited (0) 1 minute ago") + "\n"
    if command == "run":
        name = rest[rest.index("--name") + 1]
        if name in containers:
            raise Fail(f'docker: Error response from daemon: Conflict. The container name "/{name}" is already in use.')
        network = rest[rest.index("--network") + 1] if "--network" in rest else "bridge"
        if network != "bridge" and network not in state["networks"]:
            raise Fail(f"docker: Error response from daemon: network {network} not found.", 125)
        containers[name] = {"running": True, "networks": ["bridge" if network == "bridge" else network]}
        if name == "minimal-external" and "-v" in rest:
            # The local mesh's external service stands in, serving TLS with its own files: the container's
            # mount gets them, so that what the kind path trusts is what answers.
            mount = Path(rest[rest.index("-v") + 1].split(":")[0])
            shutil.copytree(local_backend(state).external_tls_dir, mount, dirs_exist_ok=True)
        return "0123456789ab\n"
    if command == "start":
        containers[rest[0]]["running"] = True
        return rest[0] + "\n"
    if command == "rm":
        name = rest[-1]
        if name not in containers:
            raise Fail(f"Error response from daemon: No such container: {name}")
        del containers[name]
        if name == "kind-registry":
            state["registry"] = []  # the registry's storage lives in the container: a new one is empty
        return name + "\n"
    if command == "inspect":
        template, name = rest[1], rest[2]
        if name not in containers:
            raise Fail(f"Error: No such object: {name}")
        if template == "{{json .NetworkSettings.Networks}}":
            return json.dumps({network: {} for network in containers[name]["networks"]}) + "\n"
        if template == "{{.NetworkSettings.Networks.kind.IPAddress}}":
            return mesh_layout(state).external_ip + "\n"  # the local mesh's external service stands in
        raise Fail(f"stand-in: unknown inspect template {template}")
    if command == "network":
        network, name = rest[1], rest[2]
        if network not in state["networks"]:
            raise Fail(f"Error response from daemon: network {network} not found")
        containers[name]["networks"].append(network)
        return ""
    if command == "exec":
        return docker_exec(state, rest, stdin)
    if command == "build":
        state["images"].append(rest[rest.index("-t") + 1])
        return ""
    if command == "tag":
        state["images"].append(rest[1])
        return ""
    if command == "image" and rest[0] == "inspect":
        # The local image store: it keeps images after the registry container is gone.
        if rest[-1] not in state["images"]:
            raise Fail(f"Error response from daemon: No such image: {rest[-1]}")
        return f"sha256:{'1' * 64}\n"
    if command == "push":
        reference = rest[0]
        if not containers.get("kind-registry", {}).get("running"):
            raise Fail(f'Get "http://{reference.split("/")[0]}/v2/": dial tcp: connect: connection refused')
        state["registry"].append(reference.split("/", 1)[1])
        return f"v1.0.0: digest: sha256:{'0' * 64} size: 1234\n"
    if command == "logs":
        return local_backend(state).log_file("minimal-external").read_text(errors="replace")
    raise Fail(f"stand-in docker: unknown command {shlex.join(args)}")


def docker_exec(state: dict, rest: list[str], stdin: str) -> str:
    rest = [a for a in rest if a != "-i"]
    name, command = rest[0], rest[1:]
    if name not in state["containers"]:
        raise Fail(f"Error response from daemon: No such container: {name}")
    if name == "kind-registry" and command[0] == "wget":
        # distribution's API: GET /v2/<name>/tags/list lists a repository's tags, 404 NAME_UNKNOWN for an
        # unknown one; busybox wget exits 1 on it.
        repository = command[-1].split("/v2/")[1].removesuffix("/tags/list")
        tags = [ref.split(":")[1] for ref in state["registry"] if ref.split(":")[0] == repository]
        if not tags:
            raise Fail("wget: server returned error: HTTP/1.1 404 Not Found")
        return json.dumps({"name": repository, "tags": tags}) + "\n"
    return ""  # mkdir/cp on a node: nothing to model


# --- kind --------------------------------------------------------------------------------------


def kind(state: dict, args: list[str], stdin: str) -> str:
    if args[0] == "version":
        version = os.environ.get("MESHY_STANDIN_KIND") or expected_kind()
        return f"kind {version} go1.24.0 linux/amd64\n"
    if state["daemon_down"]:
        # kind lists its node containers with `docker ps` (pkg/cluster/internal/providers/docker/provider.go).
        raise Fail(
            f'ERROR: failed to list clusters: command "docker ps -a ..." failed with error: exit status 1\n{DAEMON_DOWN}'
        )
    if args[:2] == ["get", "clusters"]:
        if not state["clusters"]:
            sys.stderr.write("No kind clusters found.\n")  # stderr, exit 0 (pkg/cmd/kind/get/clusters/clusters.go)
        return "".join(f"{name}\n" for name in sorted(state["clusters"]))
    name = args[args.index("--name") + 1]
    if args[:2] == ["create", "cluster"]:
        if name in state["clusters"]:
            raise Fail(f'ERROR: failed to create cluster: node(s) already exist for a cluster with the name "{name}"')
        config = yaml.safe_load(Path(args[args.index("--config") + 1]).read_text())
        mappings = config["nodes"][0]["extraPortMappings"]
        state["clusters"][name] = {
            "host_ports": {str(m["containerPort"]): m["hostPort"] for m in mappings},
            "objects": {},
            "injection": False,
        }
        if "kind" not in state["networks"]:
            state["networks"].append("kind")
        for node in (f"{name}-control-plane", f"{name}-worker", f"{name}-worker2"):
            state["containers"][node] = {"running": True, "networks": ["kind"]}
        return ""
    if args[:2] == ["delete", "cluster"]:
        # Deleting a missing cluster succeeds (pkg/cluster/internal/delete/delete.go).
        if name in state["clusters"]:
            stop_mesh(state)
            del state["clusters"][name]
            for node in (f"{name}-control-plane", f"{name}-worker", f"{name}-worker2"):
                state["containers"].pop(node, None)
        sys.stderr.write(f'Deleting cluster "{name}" ...\n')
        return ""
    raise Fail(f"stand-in kind: unknown command {shlex.join(args)}")


def expected_kind() -> str:
    k8s = os.environ.get("MESHY_K8S")
    pairs = [p for p in load_matrix() if not k8s or p.k8s == k8s]
    return pairs[-1].kind


# --- istioctl ----------------------------------------------------------------------------------


def istioctl(state: dict, args: list[str], stdin: str) -> str:
    context = args[args.index("--context") + 1]
    cluster_name = context.removeprefix("kind-")
    cluster = state["clusters"].get(cluster_name)
    if cluster is None:
        raise Fail(f'Error: context "{context}" does not exist')
    pair = pair_of_cluster(cluster_name)
    if args[0] == "install":
        objects = cluster["objects"]
        objects["istio-system/Namespace/istio-system"] = {}
        objects["istio-system/Deployment/istiod"] = {"image": f"docker.io/istio/pilot:{pair.istio_release}"}
        for gateway in ("istio-ingressgateway", "istio-egressgateway"):
            objects[f"istio-system/Deployment/{gateway}"] = {}
        start_mesh(state, cluster, pair)
        return "✔ Istio core installed\n✔ Installation complete\n"
    if args[0] == "uninstall" and minor(pair.istio_release) < 9:
        # istioctl 1.8.6 registers uninstall under `x` only (istioctl/cmd/root.go).
        raise Fail('Error: unknown command "uninstall" for "istioctl"')
    if args[0] in ("uninstall", "x"):
        for key in [k for k in cluster["objects"] if k.startswith("istio-system/")]:
            del cluster["objects"][key]
        return ""
    raise Fail(f"stand-in istioctl: unknown command {shlex.join(args)}")


# --- the local mesh behind the cluster ---------------------------------------------------------


def mesh_layout(state: dict):
    from meshy.local.topology import Layout

    base = int(os.environ["MESHY_ADDRESS_BASE"])  # the harness claims a free block for every run
    dashboard = int(os.environ.get("MESHY_DASHBOARD", "127.0.0.1:20001").rpartition(":")[2])
    return Layout(
        "127.0.0.1",
        state.get("ingress_port", 8080),
        base,
        dashboard_port=dashboard,
        ingress_tls_port=state.get("ingress_tls_port"),
        ingress_tcp_port=state.get("ingress_tcp_port"),
    )


def local_backend(state: dict):
    from meshy.console import Console
    from meshy.local.backend import LocalBackend, LocalConfig

    return LocalBackend(LocalConfig(STATE / "mesh", mesh_layout(state)), Console(quiet=True))


def start_mesh(state: dict, cluster: dict, pair: Pair) -> None:
    # The ingress gateway's node port is published on the host port kind's config maps to it.
    state["ingress_port"] = cluster["host_ports"]["30080"]
    state["ingress_tls_port"] = cluster["host_ports"]["30443"]
    state["ingress_tcp_port"] = cluster["host_ports"]["31400"]
    local_backend(state).up(pair)


def stop_mesh(state: dict) -> None:
    if (STATE / "mesh").exists():
        local_backend(state).down()
    pid = state.pop("kiali_pid", None)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def start_kiali(state: dict) -> str:
    """Kiali's web root is /kiali and / redirects there (web_root in samples/addons/kiali.yaml, all three
    releases): a one-route HTTP server answers that 302, on an address of the mesh's external block."""
    address = f"127.{mesh_layout(state).base + KIALI_ADDRESS_BLOCK_OFFSET}.200.1"
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("kiali.py")), address, "20001"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state["kiali_pid"] = process.pid
    return address


# --- kubectl -----------------------------------------------------------------------------------


def kubectl(state: dict, args: list[str], stdin: str) -> str:
    args = list(args)
    context = pop_option(args, "--context")
    namespace = pop_option(args, "-n") or "default"
    cluster_name = (context or "").removeprefix("kind-")
    cluster = state["clusters"].get(cluster_name)
    if cluster is None:
        raise Fail(f'error: context "{context}" does not exist')
    pair = pair_of_cluster(cluster_name)
    objects = cluster["objects"]
    verb = args[0]
    if verb == "apply":
        return apply(state, cluster, read_source(args[args.index("-f") + 1], stdin))
    if verb == "delete":
        if args[1] == "namespace":
            for key in [k for k in objects if k.startswith(f"{args[2]}/")]:
                del objects[key]
            return ""
        return delete(state, cluster, read_source(args[args.index("-f") + 1], stdin))
    if verb == "get":
        return get(state, cluster, pair, namespace, args[1:])
    if verb == "rollout":
        name = args[2].removeprefix("deploy/")
        if f"{namespace}/Deployment/{name}" not in objects:
            raise Fail(f'Error from server (NotFound): deployments.apps "{name}" not found')
        return f'deployment "{name}" successfully rolled out\n'
    if verb == "wait":
        # `kubectl wait pod --selector=...` fails at once while no pod matches (pods of a Deployment just
        # applied do not exist yet); the stand-in never models those pods.
        if "pod" in args:
            raise Fail("error: no matching resources found")
        return ""
    if verb == "label":
        cluster["injection"] = "istio-injection=enabled" in args
        return f"namespace/{args[2]} labeled\n"
    if verb == "patch":
        kind_name, name = args[1], args[2]
        patch = args[args.index("-p") + 1]
        key = f"{namespace}/{'Service' if kind_name == 'svc' else 'Deployment'}/{name}"
        if key not in objects:
            raise Fail(f'Error from server (NotFound): {kind_name} "{name}" not found')
        if '"/spec/selector/' in patch:
            label = json.loads(patch)[0]["path"].rsplit("/", 1)[1]
            objects[key].get("selector", {}).pop(label, None)
            local_backend(state).remove_selector_label(name, label)
        for operation in json.loads(patch) if patch.startswith("[") else []:
            if operation["path"] == "/spec/ports/0/nodePort":
                objects[key]["nodePort"] = operation["value"]
        return f"{kind_name}/{name} patched\n"
    if verb == "exec":
        return proxy_admin(state, namespace, args)
    raise Fail(f"stand-in kubectl: unknown command {shlex.join(args)}")


def pop_option(args: list[str], flag: str) -> str | None:
    if flag in args:
        index = args.index(flag)
        value = args[index + 1]
        del args[index : index + 2]
        return value
    return None


def read_source(source: str, stdin: str) -> str:
    if source == "-":
        return stdin
    if source.startswith("https://"):
        # ingress-nginx's kind manifest (deploy/static/provider/kind/deploy.yaml): its controller Deployment.
        return "kind: Deployment\nmetadata:\n  name: ingress-nginx-controller\n  namespace: ingress-nginx\n"
    path = Path(source)
    if path.is_dir():
        return "\n---\n".join(p.read_text() for p in sorted(path.glob("*.yaml")))
    return path.read_text()


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]


def key_of(doc: dict) -> str:
    metadata = doc.get("metadata", {})
    return f"{metadata.get('namespace', 'default')}/{doc['kind']}/{metadata['name']}"


def apply(state: dict, cluster: dict, text: str) -> str:
    docs = documents(text)
    lines, for_mesh = [], []
    for doc in docs:
        entry = cluster["objects"].setdefault(key_of(doc), {})
        if doc["kind"] == "Service":
            entry["selector"] = dict(doc.get("spec", {}).get("selector", {}))
        lines.append(f"{doc['kind'].lower()}/{doc['metadata']['name']} configured")
        if doc["kind"] in LOCAL_KINDS and not is_addon(doc):
            for_mesh.append(doc)
    if "istio-system/Deployment/kiali" in {key_of(doc) for doc in docs}:
        for_mesh.append(kiali_service_entry(start_kiali(state)))
    if for_mesh:
        local_backend(state).apply(yaml.safe_dump_all([mesh_view(doc) for doc in for_mesh]), "kubectl")
    return "\n".join(lines) + "\n"


def is_addon(doc: dict) -> bool:
    """Workloads outside the mesh's namespace (add-ons, ingress-nginx): recorded, not run."""
    return doc["kind"] in ("Deployment", "Service") and doc.get("metadata", {}).get("namespace", "default") != "default"


def mesh_view(doc: dict) -> dict:
    """What the local mesh takes of a resource: `addresses` of a ServiceEntry only feed the sidecars' DNS
    table on a cluster (DNS capture); the local backend resolves from its own host table."""
    if doc["kind"] == "ServiceEntry":
        doc = {**doc, "spec": {k: v for k, v in doc["spec"].items() if k != "addresses"}}
    return doc


def kiali_service_entry(address: str) -> dict:
    return {
        # v1beta1: served by every Istio release of the matrix (v1 only from 1.22; the mesh behind keeps its pair).
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "ServiceEntry",
        "metadata": {"name": "kiali-standin", "namespace": "istio-system"},
        "spec": {
            "hosts": ["kiali.istio-system.svc.cluster.local"],
            "location": "MESH_INTERNAL",
            "ports": [{"number": 20001, "name": "http", "protocol": "HTTP"}],
            "resolution": "STATIC",
            "endpoints": [{"address": address}],
        },
    }


def delete(state: dict, cluster: dict, text: str) -> str:
    docs = documents(text)
    for doc in docs:
        cluster["objects"].pop(key_of(doc), None)
    for_mesh = [mesh_view(doc) for doc in docs if doc["kind"] in LOCAL_KINDS]
    if for_mesh:
        local_backend(state).delete(yaml.safe_dump_all(for_mesh), "kubectl")
    return ""


def get(state: dict, cluster: dict, pair: Pair, namespace: str, args: list[str]) -> str:
    objects = cluster["objects"]
    output = args[args.index("-o") + 1] if "-o" in args else ""
    if args[0] == "--raw":
        return app_metrics(state, cluster, args[1])
    if args[0] == "pods":
        return json.dumps(pods(cluster, pair)) + "\n"
    if args[0] in ("nodes",):
        return ""
    names = [a for a in args[1:] if not a.startswith("-") and a not in (output,)]
    kind_name = {"deploy": "Deployment", "svc": "Service", "namespace": "Namespace"}[args[0]]
    found = []
    for name in names:
        key = f"{name}/Namespace/{name}" if kind_name == "Namespace" else f"{namespace}/{kind_name}/{name}"
        if key not in objects:
            if "--ignore-not-found" in args:
                continue
            raise Fail(f'Error from server (NotFound): {args[0]} "{name}" not found')
        found.append((name, objects[key]))
    if output == "name":
        prefix = {"Deployment": "deployment.apps", "Service": "service", "Namespace": "namespace"}[kind_name]
        return "".join(f"{prefix}/{name}\n" for name, _ in found)
    if output.startswith("jsonpath="):
        field = {
            "{.spec.template.spec.containers[0].image}": "image",
            "{.spec.ports[0].nodePort}": "nodePort",
            "{.spec.selector}": "selector",
        }[output.removeprefix("jsonpath=")]
        values = [entry.get(field) for _, entry in found if entry.get(field) is not None]
        return "".join(json.dumps(v, separators=(",", ":")) if isinstance(v, dict) else str(v) for v in values)
    raise Fail(f"stand-in kubectl: unknown get {shlex.join(args)}")


def pods(cluster: dict, pair: Pair) -> dict:
    """The default namespace's pods as kubectl prints them.

    With injection on, istio-proxy is a second container up to Istio 1.8; Istio 1.28 and 1.30 inject it as a
    native sidecar - an init container with restartPolicy Always - on Kubernetes >= 1.33, so the pod shows
    1/1 (pkg/kube/inject/webhook.go, DetectNativeSidecar, at 1.28.10 and 1.30.3).
    """
    native = minor(pair.istio_release) >= 28 and minor(pair.node_version) >= 33
    items = []
    for key in sorted(cluster["objects"]):
        namespace, kind_name, name = key.split("/")
        if namespace != "default" or kind_name != "Deployment":
            continue
        app = {"name": "minimal-service", "ready": True}
        proxy = {"name": "istio-proxy", "ready": True}
        spec = {"containers": [{"name": "minimal-service"}]}
        status = {"containerStatuses": [app]}
        if cluster["injection"] and native:
            spec["initContainers"] = [{"name": "istio-proxy", "restartPolicy": "Always"}]
            status["initContainerStatuses"] = [proxy]
        elif cluster["injection"]:
            spec["containers"].append({"name": "istio-proxy"})
            status["containerStatuses"].append(proxy)
        items.append({"metadata": {"name": f"{name}-5d9c7b8f4-x7k2p"}, "spec": spec, "status": status})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def app_metrics(state: dict, cluster: dict, path: str) -> str:
    """The API server's service proxy (/api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH) to a pod the
    Service selects."""
    import requests

    found = re.fullmatch(r"/api/v1/namespaces/(\w+)/services/([\w-]+):\w+/proxy(/.*)", path)
    if not found:
        raise Fail(f"stand-in kubectl: unknown raw path {path}")
    namespace, service, rest = found.groups()
    entry = cluster["objects"].get(f"{namespace}/Service/{service}")
    if entry is None:
        raise Fail(f'Error from server (NotFound): services "{service}" not found')
    selector = entry.get("selector", {})
    pod = next((p for p in local_backend(state).pods() if selector.items() <= p.labels.items()), None)
    if pod is None:
        raise Fail(f'Error from server (ServiceUnavailable): no endpoints available for service "{service}"')
    if rest == "/metrics":
        # The apps' metrics, read directly as before (the scenarios that read them run without STRICT).
        return requests.get(f"http://{pod.app_ip}:{pod.ports[0]}{rest}", timeout=10, proxies={"http": ""}).text
    # Anything else goes to the pod's address as the API server's proxy does: into its sidecar, in plaintext.
    try:
        url = f"http://{pod.ip}:{pod.ports[0]}{rest}"
        response = requests.get(url, timeout=10, proxies={"http": ""}, headers={"Connection": "close"})
    except requests.ConnectionError:
        raise Fail(
            "Error from server (ServiceUnavailable): error trying to reach service: read tcp: connection reset by peer"
        ) from None
    if response.status_code == 403:
        # kubectl shows a proxied error status as an error of that status, with the body.
        raise Fail(f"Error from server (Forbidden): {response.text}")
    return response.text


def proxy_admin(state: dict, namespace: str, args: list[str]) -> str:
    """`kubectl exec deploy/X -c istio-proxy -- pilot-agent request GET PATH`: the proxy's Envoy admin API."""
    proxy = args[1].removeprefix("deploy/")
    path = args[-1]
    backend = local_backend(state)
    # The local proxies' admin interfaces are owner-only Unix sockets.
    text = backend.admin_get(backend.proxy_name(proxy), f"/{path}")
    if text is None:
        raise Fail(f"error: unable to upgrade connection: the admin interface of {proxy} does not answer")
    if path == "stats":
        return "".join(line + "\n" for line in text.splitlines() if line.startswith(DEFAULT_STATS))
    if path == "stats/prometheus":
        kept = [line for line in text.splitlines() if line.startswith(DEFAULT_PROMETHEUS)]
        return "\n".join(kept) + "\n" + standard_metrics(backend, proxy)
    return text


def standard_metrics(backend, proxy: str) -> str:
    """Istio's standard metrics as this proxy reports them itself: its sidecar's inbound requests as
    destination, its outbound ones (a gateway's: all) as source, with Istio's labels. Istio 1.8 adds them with
    the telemetry v2 EnvoyFilters (manifests/charts/istio-control/istio-discovery/templates/telemetryv2_1.8.yaml:
    stats_inbound on SIDECAR_INBOUND, stats_outbound on SIDECAR_OUTBOUND and GATEWAY); 1.28 and 1.30 build
    them in the same way (pilot/pkg/model/telemetry.go, workloadMode). The local proxies have no Istio stats
    filter, so the mesh behind answers with its own reports of the same requests (from the access logs),
    narrowed to this proxy's."""
    samples = istio.reported_by(prometheus.parse(backend.metrics_text()), proxy)
    return prometheus.exposition(samples)


# --- entry point -------------------------------------------------------------------------------

TOOLS = {"docker": docker, "kind": kind, "kubectl": kubectl, "istioctl": istioctl}


def main(argv: list[str]) -> int:
    tool, args = argv[0], argv[1:]
    STATE.mkdir(parents=True, exist_ok=True)
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    with (STATE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record(tool, args)
        state = load()
        try:
            output = TOOLS[tool](state, args, stdin)
        except Fail as error:
            save(state)
            sys.stderr.write(f"{error}\n")
            return error.code
        save(state)
    sys.stdout.write(output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
