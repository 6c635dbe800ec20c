"""What proxies call: the service registry (Services, ServiceEntries, gateways), destination
rules and the outbound clusters they shape, following Istio's semantics. Pure, like build.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from meshy.local.model import (
    CircuitBreaker,
    Cluster,
    Endpoint,
    GatewayPod,
    Outlier,
    Pod,
)
from meshy.local.origination import ORIGINATING, check_files, check_origination, origination
from meshy.local.release import IstioRelease
from meshy.local.resources import BuildError, Resource, ResourceSet
from meshy.local.security import PeerPolicies, check_client_tls, endpoint_mtls, pod_identity
from meshy.local.shapes import seconds
from meshy.local.webhook import check_empty_policies

CLUSTER_DOMAIN = "svc.cluster.local"


def gateway_target_port(port: int) -> int:
    """The container port behind a gateway Service port (Istio's 80 -> 8080)."""
    return port + 8000 if port < 1024 else port


# --- The service registry -----------------------------------------------------


@dataclass
class RegistryHost:
    """A host the mesh knows: a Kubernetes Service or a ServiceEntry host."""

    host: str
    namespace: str
    short_name: str | None  # Services only: reachable by bare name in their namespace
    ports: dict[int, list[tuple[Endpoint, dict[str, str]]]] = field(default_factory=dict)
    dns: dict[int, tuple[str, int]] = field(default_factory=dict)
    # The pod behind each endpoint of a Service: who answers (auto mTLS, its identity).
    peers: dict[Endpoint, Pod] = field(default_factory=dict)
    # ServiceEntry ports of protocol HTTPS, TLS or TCP: a route's destination (a DestinationRule may originate
    # TLS to it), but no HTTP route of the sidecar, whose apps reach it through HTTP_PROXY: a sidecar
    # would pass their own TLS through by SNI, which the local backend does not carry.
    opaque: set[int] = field(default_factory=set)
    # Ports Istio speaks HTTP/2 to (ServiceEntry protocol HTTP2, Service port names); locally HTTP/1.1.
    http2: set[int] = field(default_factory=set)
    # A ServiceEntry's subjectAltNames: the names its servers' certificates carry (Istio's service accounts).
    subject_alt_names: tuple[str, ...] = ()


def fqdn(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.{CLUSTER_DOMAIN}"


def service_registry(
    resources: ResourceSet, pods: list[Pod], gateways: list[GatewayPod], hosts: dict[str, str]
) -> dict[str, RegistryHost]:
    registry: dict[str, RegistryHost] = {}
    for gateway in gateways:
        entry = RegistryHost(fqdn(gateway.name, gateway.namespace), gateway.namespace, gateway.name)
        for port in (80, 443):
            address, bound = gateway.bind.get(port, (gateway.ip, gateway_target_port(port)))
            entry.ports[port] = [(Endpoint(address, bound), gateway.labels)]
        registry[entry.host] = entry
    for service in resources.of_kind("Service"):
        entry = RegistryHost(fqdn(service.name, service.namespace), service.namespace, service.name)
        selector = service.spec.get("selector") or {}
        for port in service.spec.get("ports", []):
            target = port.get("targetPort", port["port"])
            if isinstance(target, str):
                if not target.isdigit():
                    raise BuildError(f"{service.key}: targetPort {target!r} must be a port number in the local backend")
                target = int(target)
            chosen = [
                pod
                for pod in pods
                if pod.namespace == service.namespace
                and selector
                and selector.items() <= pod.labels.items()
                and target in pod.ports
            ]
            if speaks_http2(port.get("name", "")):
                entry.http2.add(port["port"])
            entry.ports[port["port"]] = [(Endpoint(pod.ip, target), pod.labels) for pod in chosen]
            entry.peers.update({Endpoint(pod.ip, target): pod for pod in chosen})
        registry[entry.host] = entry
    for entry_resource in resources.of_kind("ServiceEntry"):
        for host, entry in service_entry_hosts(entry_resource, hosts).items():
            if host in registry and registry[host].short_name is not None:
                raise BuildError(
                    f"{entry_resource.key}: host {host} is Service {registry[host].short_name}'s; "
                    "a ServiceEntry cannot take it over: choose another host"
                )
            registry[host] = entry
    return registry


def speaks_http2(port_name: str) -> bool:
    """A Service port Istio takes for HTTP/2 by its name (pkg/config/kube/conversion.go ConvertProtocol and
    protocol.IsHTTP2 at 1.8.6 and 1.30.3): http2, grpc or grpc-web, before any "-"."""
    name = port_name.lower()
    return name.startswith("grpc-web") or name.split("-", 1)[0] in ("http2", "grpc")


def service_entry_hosts(resource: Resource, hosts: dict[str, str]) -> dict[str, RegistryHost]:
    spec = resource.spec
    resolution = spec.get("resolution", "STATIC" if spec.get("endpoints") else "DNS")
    if resolution == "DNS" and spec.get("endpoints"):
        raise BuildError(f"{resource.key}: DNS resolution with explicit endpoints is not supported locally; use STATIC")
    if resolution == "STATIC" and not spec.get("endpoints"):
        raise BuildError(f"{resource.key}: resolution STATIC needs spec.endpoints with addresses")
    result = {}
    for host in spec.get("hosts", []):
        if "*" in host:
            raise BuildError(f"{resource.key}: wildcard host {host!r} is not supported locally; list exact hosts")
        # push_context.go addServiceAccounts at 1.30.3: sorted, each name once.
        entry = RegistryHost(
            host, resource.namespace, None, subject_alt_names=tuple(sorted(set(spec.get("subjectAltNames", []))))
        )
        for port in spec.get("ports", []):
            number, target = port["number"], port.get("targetPort", port["number"])
            if port.get("protocol", "").upper() in ("HTTPS", "TLS", "TCP"):
                entry.opaque.add(number)
            if port.get("protocol", "").upper() == "HTTP2":
                entry.http2.add(number)
            if resolution == "STATIC":
                entry.ports[number] = [
                    (Endpoint(ep["address"], ep.get("ports", {}).get(port["name"], target)), ep.get("labels", {}))
                    for ep in spec["endpoints"]
                ]
            elif host in hosts:
                # The backend's host table stands in for /etc/hosts (see the walkthrough's egress step).
                entry.ports[number] = [(Endpoint(hosts[host], target), {})]
            else:
                entry.ports[number] = []
                entry.dns[number] = (host, target)
        result[host] = entry
    return result


def resolve_host(name: str, namespace: str, registry: dict[str, RegistryHost]) -> str:
    """A VirtualService or DestinationRule host as the registry names it."""
    if name in registry:
        return name
    for candidate in (fqdn(name, namespace), f"{name}.{CLUSTER_DOMAIN}", f"{name}.cluster.local"):
        if candidate in registry:
            return candidate
    return fqdn(name, namespace) if "." not in name else name


# --- Destination rules and clusters -------------------------------------------------


def destination_rules(resources: ResourceSet, registry: dict[str, RegistryHost]) -> dict[str, Resource]:
    rules: dict[str, Resource] = {}
    for rule in resources.of_kind("DestinationRule"):
        host = resolve_host(rule.spec.get("host", ""), rule.namespace, registry)
        if not rule.spec.get("host"):
            raise BuildError(f"{rule.key}: spec.host is required")
        # Istio applies the oldest rule for a host; later ones are ignored, which we refuse instead.
        if host in rules:
            raise BuildError(f"{rule.key}: {rules[host].key} already sets the rules for {host}; merge them into one")
        check_policies(rule)
        names = [s["name"] for s in rule.spec.get("subsets", [])]
        if len(names) != len(set(names)):
            raise BuildError(f"{rule.key}: subset names must be unique")
        rules[host] = rule
    return rules


def check_policies(rule: Resource) -> None:
    """One-of rules Istio's validation enforces on load balancer settings (validation.go validateLoadBalancer)."""
    check_empty_policies(rule.key, rule.spec)
    policies = [("spec.trafficPolicy", rule.spec.get("trafficPolicy") or {})]
    policies += [
        (f"spec.subsets[{i}].trafficPolicy", s.get("trafficPolicy") or {})
        for i, s in enumerate(rule.spec.get("subsets", []))
    ]
    for path, policy in list(policies):
        policies += [(f"{path}.portLevelSettings[{i}]", p) for i, p in enumerate(policy.get("portLevelSettings", []))]
    for path, policy in policies:
        check_client_tls(rule.key, path, policy)
        check_origination(rule.key, path, policy.get("tls") or {})
        balancer = policy.get("loadBalancer", {})
        if "simple" in balancer and "consistentHash" in balancer:
            raise BuildError(f"{rule.key}: {path}.loadBalancer takes simple or consistentHash, not both")
        keys = [
            k
            for k in ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
            if k in balancer.get("consistentHash", {})
        ]
        if "consistentHash" in balancer and len(keys) != 1:
            raise BuildError(
                f"{rule.key}: {path}.loadBalancer.consistentHash takes exactly one of httpHeaderName, "
                "httpCookie, useSourceIp, httpQueryParameterName"
            )
    ports = [p["port"]["number"] for _, policy in policies[:1] for p in policy.get("portLevelSettings", [])]
    if len(ports) != len(set(ports)):
        raise BuildError(f"{rule.key}: spec.trafficPolicy.portLevelSettings names a port twice")


def subset_labels(rule: Resource | None, subset: str) -> dict[str, str] | None:
    for entry in rule.spec.get("subsets", []) if rule else []:
        if entry["name"] == subset:
            return entry.get("labels", {})
    return None


POLICY_PARTS = ("connectionPool", "outlierDetection", "loadBalancer", "tls")


def port_level(policy: dict[str, Any], port: int) -> tuple[dict[str, Any], bool]:
    """A policy's settings for one port: a matching portLevelSettings entry replaces them whole (no inheritance)."""
    for entry in policy.get("portLevelSettings", []):
        if entry["port"]["number"] == port:
            return {part: entry[part] for part in POLICY_PARTS if part in entry}, True
    return {part: policy[part] for part in POLICY_PARTS if part in policy}, False


def traffic_policy(rule: Resource | None, subset: str, port: int) -> dict[str, Any]:
    """The policy of one subset on one port (util.go MergeSubsetTrafficPolicy at 1.30.3; 1.8.6
    cluster_builder.go MergeTrafficPolicy): port-level settings first, then the subset's
    parts override the rule's, all of them when the subset has port-level settings for the port."""
    if rule is None:
        return {}
    policy, _ = port_level(rule.spec.get("trafficPolicy") or {}, port)
    for entry in rule.spec.get("subsets", []):
        if entry["name"] == subset and entry.get("trafficPolicy") is not None:
            own, whole = port_level(entry["trafficPolicy"], port)
            policy = own if whole else {**policy, **own}
    return policy


def cluster_name(host: str, port: int, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{host}"


def outbound_clusters(
    registry: dict[str, RegistryHost], rules: dict[str, Resource], peers: PeerPolicies, release: IstioRelease
) -> list[Cluster]:
    clusters = []
    for host, entry in sorted(registry.items()):
        rule = rules.get(host)
        subsets = [""] + [s["name"] for s in (rule.spec.get("subsets", []) if rule else [])]
        for port in sorted(entry.ports):
            for subset in subsets:
                labels = subset_labels(rule, subset) if subset else {}
                endpoints = tuple(ep for ep, ep_labels in entry.ports[port] if labels.items() <= ep_labels.items())
                dns_name, dns_port = entry.dns.get(port, (None, 0))
                policy = traffic_policy(rule, subset, port)
                name = cluster_name(host, port, subset)
                if dns_name:
                    cluster = Cluster(name, dns_name=dns_name, dns_port=dns_port, lb="ROUND_ROBIN")
                else:
                    cluster = policy_cluster(name, endpoints, policy)
                if (policy.get("tls") or {}).get("mode") in ORIGINATING:
                    check_files(rule.key if rule else host, policy["tls"], release)
                    if port in entry.http2:
                        raise BuildError(http2_origination(rule, host, port))
                    made = origination(policy["tls"], release, entry.subject_alt_names)
                    clusters.append(replace(cluster, tls="origin", origination=made))
                    continue
                clusters.append(with_tls(cluster, entry, port, subset, policy, peers))
    return clusters


def http2_origination(rule: Resource | None, host: str, port: int) -> str:
    # cluster_tls.go constructUpstreamTLS (1.30.3; v1alpha3/cluster.go at 1.8.6): ALPN h2 and HTTP/2 upstream.
    return (
        f"{rule.key if rule else host}: tls mode SIMPLE/MUTUAL towards {host} port {port}, which Istio takes for "
        "HTTP/2, would speak HTTP/2 with ALPN h2; the local backend speaks HTTP/1.1 upstream: declare it HTTP/HTTPS"
    )


def with_tls(
    cluster: Cluster, entry: RegistryHost, port: int, subset: str, policy: dict[str, Any], peers: PeerPolicies
) -> Cluster:
    """The cluster's mutual TLS: a DestinationRule's tls mode, else Istio's auto mTLS per endpoint
    (cluster_tls.go buildUpstreamTLSSettings, mtls_checker.go checkMtlsEnabled)."""
    mode = (policy.get("tls") or {}).get("mode", "DISABLE") if "tls" in policy else None
    endpoints = tuple(
        replace(ep, mtls=endpoint_mtls(peers, entry.peers.get(ep), ep.port, mode)) for ep in cluster.endpoints
    )
    if mode == "ISTIO_MUTUAL":
        tls = "istio"
    elif mode is None and any(ep.mtls for ep in endpoints):
        tls = "auto"
    else:
        return replace(cluster, endpoints=endpoints)
    # SNI as Istio names it (model.BuildDNSSrvSubsetKey); SANs: every account the service runs as.
    sni = f"outbound_.{port}_.{subset}_.{entry.host}"
    # ISTIO_MUTUAL to a ServiceEntry checks its subjectAltNames (1.8.6 cluster.go buildAutoMtlsSettings).
    identities = tuple(sorted({pod_identity(pod) for pod in entry.peers.values()} | set(entry.subject_alt_names)))
    return replace(cluster, endpoints=endpoints, tls=tls, sni=sni, peer_identities=identities)


def policy_cluster(name: str, endpoints: tuple[Endpoint, ...], policy: dict[str, Any]) -> Cluster:
    pool = policy.get("connectionPool", {})
    tcp, http = pool.get("tcp", {}), pool.get("http", {})
    circuit = None
    if tcp or http:
        circuit = CircuitBreaker(
            max_connections=tcp.get("maxConnections"),
            max_pending_requests=http.get("http1MaxPendingRequests"),
            max_requests=http.get("http2MaxRequests"),
            max_retries=http.get("maxRetries"),
        )
    outlier = None
    # cluster.go applyOutlierDetection: an empty outlierDetection still turns detection on (Envoy defaults).
    if (detection := policy.get("outlierDetection")) is not None:
        # Istio's applyOutlierDetection (1.8.6 pilot/pkg/networking/core/v1alpha3/cluster.go,
        # 1.30.3 pilot/pkg/networking/core/cluster_traffic_policy.go) never reads the deprecated
        # consecutiveErrors, so Envoy's default of 5 applies; the panic threshold becomes 0.
        outlier = Outlier(
            consecutive_5xx=detection.get("consecutive5xxErrors"),
            consecutive_gateway=detection.get("consecutiveGatewayErrors"),
            interval=seconds(detection["interval"]) if "interval" in detection else None,
            base_ejection=seconds(detection["baseEjectionTime"]) if "baseEjectionTime" in detection else None,
            # Only a percentage above 0 is passed on; 0 leaves Envoy's default of 10%.
            max_ejection_percent=detection.get("maxEjectionPercent") or None,
        )
    balancer = policy.get("loadBalancer", {})
    lb = balancer.get("simple", "LEAST_REQUEST")
    ring_size = None
    if "consistentHash" in balancer:
        # cluster_traffic_policy.go ApplyRingHashLoadBalancer: RING_HASH, minimumRingSize or Envoy's 1024.
        lb, ring_size = "RING_HASH", balancer["consistentHash"].get("minimumRingSize") or 1024
    return Cluster(
        name,
        endpoints=endpoints,
        lb="LEAST_REQUEST" if lb == "LEAST_CONN" else lb,
        connect_timeout=seconds(tcp["connectTimeout"]) if "connectTimeout" in tcp else 10.0,
        circuit=circuit,
        outlier=outlier,
        max_requests_per_connection=http.get("maxRequestsPerConnection"),
        ring_size=ring_size,
        idle_timeout=seconds(http["idleTimeout"]) if "idleTimeout" in http else None,
    )


def inbound_cluster(pod: Pod, port: int) -> Cluster:
    return Cluster(f"inbound|{port}||", endpoints=(Endpoint(pod.app_ip, port),), lb="ROUND_ROBIN")
