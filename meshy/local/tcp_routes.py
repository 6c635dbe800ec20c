"""VirtualService `tcp` routes on a gateway's TCP server: Istio's choice of route into the model, and Envoy's tcp_proxy.

Istio 1.30.3 pilot/pkg/networking/core/gateway.go
buildGatewayNetworkFiltersFromTCPRoutes: of the VirtualServices bound to the
gateway whose hosts match the server's, the first `tcp` entry whose match
holds (l4MultiMatch: no match, or a match whose port is the server's or
unset and whose gateways name this one or are empty) makes the server's only
network filter; networkfilter.go buildOutboundNetworkFilters: one destination
is a plain cluster, several a weighted one, destinations of weight 0 dropped.
1.8.6 chooses the same way (v1alpha3/gateway.go). Weights follow the release
as HTTP routes' do. Locally `tcp` routes work at gateways only: an app's own
TCP connections have no sidecar listener to reach (apps reach their sidecar
through HTTP_PROXY), so a `tcp` entry bound to the mesh is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshy.local.model import Listener, WeightedCluster
from meshy.local.resources import BuildError, Resource
from meshy.local.routes import Context, destination_cluster, route_weights
from meshy.local.telemetry.accesslog import access_logs

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def check_tcp(vs: Resource, bound: list[str], context: Context) -> None:
    """Every tcp entry's destinations resolve and weigh as the release wants; none is bound to the mesh."""
    for index, entry in enumerate(gateway_entries(vs, bound, "tcp")):
        tcp_clusters(entry, f"{vs.key} tcp[{index}]", vs, context)


def gateway_entries(vs: Resource, bound: list[str], kind: str) -> list[dict[str, Any]]:
    """The VirtualService's `kind` (tcp or tls) entries, refused when it is bound to the mesh."""
    entries = vs.spec.get(kind, [])
    if entries and "mesh" in bound:
        raise BuildError(
            f"{vs.key}: {kind} routes work at gateways only in the local backend (apps reach their sidecar over "
            "HTTP); bind the VirtualService to a Gateway"
        )
    return entries


def tcp_clusters(
    entry: dict[str, Any], where: str, vs: Resource, context: Context, kind: str = "tcp"
) -> tuple[WeightedCluster, ...]:
    """The clusters a tcp (or tls) entry's destinations weigh, weight 0 dropped (networkfilter.go)."""
    destinations = entry.get("route", [])
    if not destinations:
        raise BuildError(f"{where}: a {kind} entry needs at least one route destination")
    weights = route_weights(destinations, where, context.release)
    return tuple(
        WeightedCluster(destination_cluster(d["destination"], where, vs.namespace, context.registry, context.rules), w)
        for d, w in zip(destinations, weights, strict=True)
        if w > 0
    )


def matches(entry: dict[str, Any], port: int, gateway: str, vs_namespace: str) -> bool:
    """l4MultiMatch: the entry applies to this gateway server (`gateway` is namespace/name)."""
    conditions = entry.get("match") or []
    if not conditions:
        return True
    for condition in conditions:
        names = {name if "/" in name else f"{vs_namespace}/{name}" for name in condition.get("gateways", [])}
        if condition.get("port", port) == port and (not names or gateway in names):
            return True
    return False


def server_route(
    port: int, gateway: str, services: list[tuple[Resource, bool]], context: Context
) -> tuple[WeightedCluster, ...]:
    """The clusters of a TCP server on `port` of `gateway`; `services`: VirtualServices bound to it, oldest
    first, each with whether its hosts match the server's. Empty when no entry applies (no listener then)."""
    for vs, host_matches in services:
        if not host_matches:
            continue
        for index, entry in enumerate(vs.spec.get("tcp", [])):
            if matches(entry, port, gateway, vs.namespace):
                return tcp_clusters(entry, f"{vs.key} tcp[{index}]", vs, context)
    return ()


# --- Envoy ----------------------------------------------------------------------------


def tcp_proxy_chains(item: Listener, log_dir: Path) -> dict[str, Any]:
    """The listener's one filter chain: tcp_proxy to a cluster or weighted clusters, logged as connections."""
    return {"filter_chains": [{"filters": [tcp_proxy(item.name, item.tcp, log_dir)]}]}


def tcp_proxy(listener: str, clusters: tuple[WeightedCluster, ...], log_dir: Path) -> dict[str, Any]:
    """A tcp_proxy network filter to one cluster or several by weight, its connections logged as `listener`'s."""
    config: dict[str, Any] = {"@type": TCP_PROXY, "stat_prefix": listener}
    if len(clusters) == 1:
        config["cluster"] = clusters[0].cluster
    else:
        config["weighted_clusters"] = {"clusters": [{"name": c.cluster, "weight": c.weight} for c in clusters]}
    config["access_log"] = access_logs(log_dir, listener, tcp=True)
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": config}
