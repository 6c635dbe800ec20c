"""Resources + workloads -> the mesh model, following Istio's documented semantics.

Everything here is pure: the same inputs always give the same model, and a
resource that cannot be honoured raises BuildError naming it. The registry and
clusters live in upstreams.py, VirtualService routes in routes.py.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace

from meshy.local.gateway_tls import check_port, gateway_secrets, server_tls
from meshy.local.jwt import check_request_authentication
from meshy.local.memo import BuildMemo
from meshy.local.model import (
    Authz,
    Cluster,
    Endpoint,
    GatewayPod,
    JwtProvider,
    Listener,
    Match,
    Mesh,
    Pod,
    Proxy,
    Route,
    ServerTls,
    SniRoute,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from meshy.local.origination import file_reader, proxy_files
from meshy.local.passthrough import check_terminating_overlap, check_tls, is_passthrough
from meshy.local.passthrough import server_routes as passthrough_routes
from meshy.local.release import DEFAULT_RELEASE, IstioRelease
from meshy.local.resources import BuildError, Resource, ResourceSet
from meshy.local.routes import (
    MESH,
    Context,
    default_route,
    http_route,
    http_routes,
    sort_catch_all_last,
    unknown_host_route,
    vs_gateways,
)
from meshy.local.security import (
    PeerPolicies,
    check_authorization,
    gateway_identity,
    peer_mode,
    peer_policies,
    pod_identity,
    workload_authz,
    workload_jwt,
)
from meshy.local.shapes import brief, plain
from meshy.local.tcp_routes import check_tcp, server_route
from meshy.local.upstreams import (
    RegistryHost,
    destination_rules,
    gateway_target_port,
    inbound_cluster,
    outbound_clusters,
    resolve_host,
    service_registry,
)
from meshy.local.webhook import check_virtual_service_spec

OUTBOUND_PORT = 15001
ADMIN_PORT = 15000
# The server header of gateway and inbound sidecar responses (EnvoyServerName, accesslog.go at each tag).
ISTIO_SERVER_NAME = "istio-envoy"
# Re-exported: the workload layout (topology.py) and callers name them from here.
__all__ = ["ADMIN_PORT", "OUTBOUND_PORT", "BuildError", "Inputs", "build_mesh", "gateway_target_port"]

# --- Proxies ------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    resources: ResourceSet
    pods: list[Pod]
    gateways: list[GatewayPod]
    hosts: dict[str, str]
    release: IstioRelease = DEFAULT_RELEASE


def build_mesh(inputs: Inputs, memo: BuildMemo | None = None) -> Mesh:
    """The model of every proxy; with a memo, what an earlier build made from the same inputs is reused."""
    # A memo of its own when none is given: one code path, and a build's VirtualServices are built once.
    memo = memo or BuildMemo()
    check_namespaces(inputs.resources)
    for resource in inputs.resources.of_kind("Service"):
        check_ports(resource, "port", need_names=True)
    for resource in inputs.resources.of_kind("ServiceEntry"):
        check_ports(resource, "number", need_names=False)
        check_endpoints(resource)
    registry = service_registry(inputs.resources, inputs.pods, inputs.gateways, inputs.hosts)
    rules = destination_rules(inputs.resources, registry)
    context = Context(MESH, None, registry, rules, inputs.release)
    memo.begin(context)
    # Each VirtualService with the gateways it binds to, worked out once per build.
    services = [(vs, vs_gateways(vs)) for vs in inputs.resources.of_kind("VirtualService")]
    mesh_hosts: dict[str, Resource] = {}
    gateway_names = {f"{g.namespace}/{g.name}" for g in inputs.resources.of_kind("Gateway")}
    for vs, bound in services:
        check_virtual_service(vs, bound, gateway_names, context, memo)
        if MESH not in bound:
            continue
        for host in (resolve_host(h, vs.namespace, registry) for h in vs.spec["hosts"]):
            # Istio would apply only the oldest of the two to sidecars; refuse rather than ignore one.
            if host in mesh_hosts:
                raise BuildError(
                    f"{vs.key}: {mesh_hosts[host].key} already routes {host} in the mesh; merge them into one"
                )
            mesh_hosts[host] = vs
    peers = peer_policies(inputs.resources)
    check_authorization(inputs.resources)
    check_request_authentication(inputs.resources)
    clusters = outbound_clusters(registry, rules, peers, inputs.release)
    proxies = {}
    originations = [c.origination for c in clusters if c.origination]
    for pod in inputs.pods:
        jwt = workload_jwt(inputs.resources, pod.namespace, pod.labels)
        authz = workload_authz(inputs.resources, pod.namespace, pod.labels, jwt)
        proxy = sidecar(pod, mesh_hosts, context, clusters, memo, peers, authz, jwt)
        if originations:
            read = file_reader(pod.mounts, gateway_secrets(inputs.resources, pod.namespace))
            proxy = replace(proxy, files=proxy_files(originations, read))
        proxies[pod.name] = proxy
    for gateway in inputs.gateways:
        proxy = gateway_proxy(gateway, inputs.resources, services, context, clusters, memo)
        if originations:
            proxy = replace(proxy, files=proxy_files(originations, file_reader((), {})))
        proxies[gateway.name] = proxy
    return Mesh(proxies)


# Namespaces a cluster has before anything is applied (the walkthrough's resources use default).
BUILTIN_NAMESPACES = {"default", "istio-system", "kube-system", "kube-public", "kube-node-lease"}


def check_namespaces(resources: ResourceSet) -> None:
    """The API server refuses an object in a namespace that does not exist."""
    existing = BUILTIN_NAMESPACES | {r.name for r in resources.of_kind("Namespace")}
    for resource in resources.items.values():
        if resource.namespace and resource.namespace not in existing:
            raise BuildError(
                f"{resource.key}: namespace {resource.namespace} does not exist; apply a Namespace named "
                f"{resource.namespace} first"
            )


def check_ports(resource: Resource, number: str, need_names: bool) -> None:
    """Port numbers and names are unique; a Service with several ports names each (Kubernetes'
    ValidateService; Istio's ValidateServiceEntry for ServiceEntry ports)."""
    ports = resource.spec.get("ports") or []
    numbers = [p[number] for p in ports]
    names = [p.get("name") for p in ports if p.get("name") is not None]
    if len(numbers) != len(set(numbers)):
        raise BuildError(f"{resource.key}: spec.ports lists a port number twice; list each once")
    if len(names) != len(set(names)):
        raise BuildError(f"{resource.key}: spec.ports lists a port name twice; name each port once")
    if need_names and len(ports) > 1 and len(names) != len(ports):
        raise BuildError(f"{resource.key}: spec.ports needs a name for each port when there are several")


def check_endpoints(resource: Resource) -> None:
    """ServiceEntry endpoints: IP addresses for STATIC, ports named by the entry (ValidateServiceEntry)."""
    names = {p["name"] for p in resource.spec.get("ports") or []}
    for index, endpoint in enumerate(resource.spec.get("endpoints") or []):
        try:
            ipaddress.ip_address(endpoint["address"])
        except ValueError:
            raise BuildError(
                f"{resource.key}: spec.endpoints[{index}].address must be an IP address locally, "
                f"not {brief(endpoint['address'])}"
            ) from None
        for name in endpoint.get("ports") or {}:
            if name not in names:
                raise BuildError(
                    f"{resource.key}: spec.endpoints[{index}].ports names {plain(name)}, which spec.ports does not define"
                )


def check_virtual_service(
    vs: Resource, bound: list[str], gateway_names: set[str], context: Context, memo: BuildMemo
) -> None:
    """gateway_names: "namespace/name" of every Gateway applied."""
    for gateway in bound:
        if gateway != MESH:
            if gateway not in gateway_names:
                raise BuildError(f"{vs.key}: gateway {plain(gateway)} does not exist; apply the Gateway first")
        elif any("*" in host for host in vs.spec.get("hosts", [])):
            raise BuildError(f"{vs.key}: wildcard hosts are supported on gateways only in the local backend")
    memo.of(check_routes, vs, context)


def check_routes(vs: Resource, context: Context) -> bool:
    """What Istio's webhook checks of the whole resource, and every http and tcp entry builds, also those that
    apply to no proxy yet (all of it made from the resource's content: the memo keeps the outcome)."""
    check_virtual_service_spec(vs.key, vs.spec)
    check_tcp(vs, vs_gateways(vs), context)
    check_tls(vs, vs_gateways(vs), context)
    for index, http in enumerate(vs.spec.get("http", [])):
        for match_index, match in enumerate(http.get("match") or [{}]):
            http_route(http, match, f"{index}.{match_index}", f"{vs.key} http[{index}]", vs, context)
    return True


def routes_of(vs: Resource, context: Context) -> tuple[Route, ...]:
    """A VirtualService's routes at one place, as a value the memo may hand out again."""
    return tuple(http_routes(vs, context))


def sidecar(
    pod: Pod,
    mesh_hosts: dict[str, Resource],
    context: Context,
    clusters: list[Cluster],
    memo: BuildMemo,
    peers: PeerPolicies,
    authz: Authz | None,
    jwt: tuple[JwtProvider, ...] = (),
) -> Proxy:
    """mesh_hosts: the VirtualService bound to the mesh that routes each registry host, if one does."""
    virtual_hosts = []
    for host, entry in sorted(context.registry.items()):
        owner = mesh_hosts.get(host)
        for port in sorted(set(entry.ports) - entry.opaque):
            routes = (
                memo.of(routes_of, owner, context.at(MESH, port))
                if owner
                else [default_route(host, port, context.release)]
            )
            virtual_hosts.append(
                VirtualHost(f"{host}:{port}", sidecar_domains(entry, port, pod.namespace), tuple(routes))
            )
    virtual_hosts.append(VirtualHost("block_all", ("*",), (unknown_host_route(),)))
    # Istio's outbound listener keeps Envoy's own server name (util/proxy_headers.go at 1.30.3;
    # 1.8.6 sets ServerName only on inbound listeners and gateways, listener.go and gateway.go).
    listeners = [Listener("outbound", pod.ip, OUTBOUND_PORT, tuple(virtual_hosts), forward_proxy=True)]
    for port in pod.ports:
        inbound = Route(
            "inbound", Match(uri=StringMatch("prefix", "/")), clusters=(WeightedCluster(f"inbound|{port}||", 100),)
        )
        vhost = VirtualHost("inbound", ("*",), (inbound,), attempt_count=False)
        mode = peer_mode(peers, pod.namespace, pod.labels, port)
        listeners.append(
            Listener(
                f"inbound_{port}",
                pod.ip,
                port,
                (vhost,),
                server_name=ISTIO_SERVER_NAME,
                peer_mode=mode,
                authz=authz,
                jwt=jwt,
            )
        )
    own = [inbound_cluster(pod, port) for port in pod.ports]
    return Proxy(pod.name, Endpoint(pod.ip, ADMIN_PORT), tuple(listeners), tuple(clusters + own), pod_identity(pod))


def sidecar_domains(entry: RegistryHost, port: int, namespace: str) -> tuple[str, ...]:
    names = [entry.host]
    if entry.short_name:
        base = f"{entry.short_name}.{entry.namespace}"
        names = [base, f"{base}.svc", entry.host]
        if entry.namespace == namespace:
            names.insert(0, entry.short_name)
    domains = [f"{name}:{port}" for name in names]
    if port == 80:
        domains += names
    return tuple(domains)


def gateway_proxy(
    gateway: GatewayPod,
    resources: ResourceSet,
    services: list[tuple[Resource, list[str]]],
    context: Context,
    clusters: list[Cluster],
    memo: BuildMemo,
) -> Proxy:
    """services: every VirtualService with the gateways it binds to."""
    servers: dict[int, list[tuple[str, str]]] = {}
    plain: set[int] = set()
    tcp_ports: set[int] = set()
    terminating: dict[int, list[ServerTls]] = {}
    passing: dict[int, list[tuple[str, str, list[str]]]] = {}  # PASSTHROUGH: gateway, server name, hosts
    secrets = gateway_secrets(resources, gateway.namespace)
    for resource in resources.of_kind("Gateway"):
        selector = resource.spec.get("selector") or {}
        if not selector or not selector.items() <= gateway.labels.items():
            continue
        for index, server in enumerate(resource.spec.get("servers", [])):
            number = server["port"]["number"]
            if is_passthrough(resource, index, server):
                key = f"{resource.namespace}/{resource.name}"
                passing.setdefault(number, []).append(
                    (key, f"{number}.{index}.{resource.namespace}.{resource.name}", server["hosts"])
                )
                continue
            tls = server_tls(resource, index, server, secrets)
            if server["port"]["protocol"].upper() == "TCP":
                tcp_ports.add(number)
            elif tls is None:
                plain.add(number)
            else:
                terminating.setdefault(number, []).append(tls)
            for host in server.get("hosts", []):
                servers.setdefault(number, []).append((f"{resource.namespace}/{resource.name}", host))
    for number in terminating.keys() | passing.keys():
        names = [item.sni_hosts for item in terminating.get(number, [])]
        names += [server_names(hosts) for _, _, hosts in passing.get(number, [])]
        check_port(number, number in plain, names)
    jwt = workload_jwt(resources, gateway.namespace, gateway.labels)
    authz = workload_authz(resources, gateway.namespace, gateway.labels, jwt)
    opaque = sorted(tcp_ports | passing.keys())  # ports whose connections no HTTP filter sees
    if opaque and authz is not None:
        kind = "TCP" if opaque[0] in tcp_ports else "PASSTHROUGH"
        raise BuildError(
            f"{gateway.name} has a {kind} server on port {opaque[0]} and an AuthorizationPolicy applies to it; "
            "policies on TCP traffic are not supported locally - remove one of them"
        )
    listeners = []
    for port in sorted(tcp_ports):
        if port in plain or port in terminating or port in passing:
            raise BuildError(f"Gateway port {port} has TCP and HTTP servers; Istio cannot merge them - use two ports")
        listener = tcp_listener(gateway, port, servers[port], services, context)
        if listener is not None:
            listeners.append(listener)
    for port in sorted(set(servers) - tcp_ports):
        # Istio merges the routes of every VirtualService bound to a gateway host, oldest first.
        hosts: dict[str, tuple[Route, ...]] = {}
        places = {gateway_key: context.at(gateway_key, port) for gateway_key, _ in servers[port]}
        matchers = [(key, server_host, host_matcher(server_host)) for key, server_host in servers[port]]
        for vs, bound in services:
            merged: set[str] = set()  # a host several servers match takes the VirtualService's routes once
            for gateway_key, server_host, matches in matchers:
                if gateway_key not in bound:
                    continue
                for vs_host in vs.spec["hosts"]:
                    # gateway.go: the virtual host is the narrower of the two names (host.Names.Intersection).
                    host = (
                        vs_host if matches(vs_host, vs.namespace) else server_within(server_host, vs_host, vs.namespace)
                    )
                    if host and host not in merged:
                        merged.add(host)
                        routes = memo.of(routes_of, vs, places[gateway_key])
                        # The memo's own tuple when one VirtualService makes the host: nothing new to allocate.
                        hosts[host] = hosts[host] + routes if host in hosts else routes
        virtual_hosts = tuple(
            memo.virtual_host(
                gateway.name, f"{host}:{port}", (host,), routes, lambda r: sort_catch_all_last(r, context.release)
            )
            for host, routes in hosts.items()
            if routes
        )
        address, bind_port = gateway.bind.get(port, (gateway.ip, gateway_target_port(port)))
        listeners.append(
            Listener(
                f"gateway_{port}",
                address,
                bind_port,
                virtual_hosts,
                strip_port=True,
                server_name=ISTIO_SERVER_NAME,
                remote_address=True,
                authz=authz,
                jwt=jwt,
                tls=tuple(terminating.get(port, ())),
            )
        )
    listeners = passthrough_listeners(gateway, listeners, passing, terminating, services, context)
    return Proxy(
        gateway.name, Endpoint(gateway.ip, ADMIN_PORT), tuple(listeners), tuple(clusters), gateway_identity(gateway)
    )


def server_names(hosts: list[str]) -> tuple[str, ...]:
    """A TLS server's SNI names: its hosts without the namespace part (model/gateway.go GetSNIHostsForServer);
    empty when one is '*' (any name)."""
    names = sorted({host.split("/", 1)[-1] for host in hosts})
    return () if "*" in names else tuple(names)


def passthrough_listeners(
    gateway: GatewayPod,
    listeners: list[Listener],
    passing: dict[int, list[tuple[str, str, list[str]]]],
    terminating: dict[int, list[ServerTls]],
    services: list[tuple[Resource, list[str]]],
    context: Context,
) -> list[Listener]:
    """The listeners with the chains of the PASSTHROUGH servers added: to the port's terminating listener,
    or a listener of their own (none when no tls route applies)."""
    added: dict[str, tuple[SniRoute, ...]] = {}
    for port, servers in sorted(passing.items()):
        taken: dict[str, str] = {}
        routes: list[SniRoute] = []
        for gateway_key, server, hosts in servers:
            matchers = [host_matcher(host) for host in hosts]
            bound = [
                (vs, any(m(host, vs.namespace) for m in matchers for host in vs.spec["hosts"]))
                for vs, gateways in services
                if gateway_key in gateways
            ]
            routes += passthrough_routes(port, gateway_key, server, bound, taken, context.at(gateway_key, port))
        claimed = {sni: item.name for item in terminating.get(port, []) for sni in item.sni_hosts or ("*",)}
        check_terminating_overlap(port, routes, claimed)
        added[f"gateway_{port}"] = tuple(routes)
    result = [replace(item, passthrough=added.pop(item.name)) if item.name in added else item for item in listeners]
    for name, routes in added.items():
        if routes:
            port = int(name.removeprefix("gateway_"))
            address, bind_port = gateway.bind.get(port, (gateway.ip, gateway_target_port(port)))
            result.append(Listener(name, address, bind_port, (), passthrough=routes))
    return result


def server_within(server_host: str, vs_host: str, namespace: str) -> str | None:
    """A Gateway server's host when a wildcard VirtualService host covers it ('*' or '*.org' covers
    '*.example.org'): Istio's host.Name.SubsetOf, 1.8.6 and 1.30.3 pkg/config/host/name.go."""
    server_namespace, slash, pattern = server_host.rpartition("/")
    if slash and server_namespace not in ("*", ".", namespace):
        return None
    if vs_host == "*" or (vs_host.startswith("*.") and pattern.endswith(vs_host[1:])):
        return pattern
    return None


def tcp_listener(
    gateway: GatewayPod,
    port: int,
    servers: list[tuple[str, str]],
    services: list[tuple[Resource, list[str]]],
    context: Context,
) -> Listener | None:
    """A TCP server's listener: tcp_proxy to the clusters of the first tcp route that applies (none: no listener)."""
    gateway_key = servers[0][0]
    matchers = [host_matcher(server_host) for key, server_host in servers if key == gateway_key]
    bound = [
        (vs, any(m(host, vs.namespace) for m in matchers for host in vs.spec["hosts"]))
        for vs, gateways in services
        if gateway_key in gateways
    ]
    clusters = server_route(port, gateway_key, bound, context.at(gateway_key, port))
    if not clusters:
        return None
    address, bind_port = gateway.bind.get(port, (gateway.ip, gateway_target_port(port)))
    return Listener(f"gateway_{port}", address, bind_port, (), tcp=clusters)


def host_matches(host: str, namespace: str, server_host: str) -> bool:
    return host_matcher(server_host)(host, namespace)


def host_matcher(server_host: str) -> Callable[[str, str], bool]:
    """Whether a VirtualService host (in its namespace) matches a Gateway server's host, worked out once per server."""
    server_namespace, slash, pattern = server_host.partition("/")
    if not slash:
        server_namespace, pattern = None, server_host
    suffix = pattern[1:]
    if pattern.startswith("*") and not any(c in suffix for c in "*?["):
        # What fnmatch does with one leading "*" and nothing else to expand, without its regular expression.
        def host_ok(host: str) -> bool:
            return host.endswith(suffix)
    else:

        def host_ok(host: str) -> bool:
            return fnmatch.fnmatchcase(host, pattern)

    if server_namespace is None:
        return lambda host, namespace: host_ok(host)
    return lambda host, namespace: server_namespace in ("*", ".", namespace) and host_ok(host)
