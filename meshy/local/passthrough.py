"""Gateway servers with `tls.mode: PASSTHROUGH` and VirtualService `tls` routes: SNI routing without TLS termination.

Istio 1.30.3 pilot/pkg/networking/core/gateway.go (1.28.10 the same,
1.8.6 v1alpha3/gateway.go): a PASSTHROUGH server has no TLS context; of the
VirtualServices bound to its gateway whose hosts match the server's
(pickMatchingGatewayHosts), every `tls` entry's match that holds for the
server (l4SingleMatch: port unset or the server's, gateways empty or naming
it) makes a filter chain matched on the match's sniHosts, its only network
filter a tcp_proxy to the entry's destinations (buildOutboundNetworkFilters,
as for `tcp`). listener.go toFilterChainMatch: a "*" among the sniHosts
matches any server name. 1.28.10 and 1.30.3 skip a match repeating a server
name an earlier match on the port took (CheckDuplicates, so the first match
wins); 1.8.6 keeps both and Envoy rejects the listener, so that is refused
here. pkg/config/validation/validation.go validateTLSRoute/validateTLSMatch/
validateSniHost: a tls entry needs a match and a route, each match sniHosts,
each a subset of one of the VirtualService's hosts.

Locally `tls` routes work at gateways only, for the reason tcp_routes.py gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshy.local.model import Listener, SniRoute
from meshy.local.resources import BuildError, Resource
from meshy.local.routes import Context
from meshy.local.tcp_routes import gateway_entries, matches, tcp_clusters, tcp_proxy

PROTOCOLS = ("HTTPS", "TLS")  # validation.go: PASSTHROUGH servers carry TLS, whichever of these names it
# What a PASSTHROUGH server never reads (it holds no certificate); Istio only warns about them.
CERTIFICATE_FIELDS = ("credentialName", "subjectAltNames", "minProtocolVersion", "maxProtocolVersion", "cipherSuites")


def is_passthrough(gateway: Resource, index: int, server: dict[str, Any]) -> bool:
    """Whether a Gateway server passes TLS through; refusals name the server and the field to change."""
    settings = server.get("tls")
    if settings is None or settings.get("mode", "PASSTHROUGH") != "PASSTHROUGH":
        return False
    where = f"Gateway {gateway.namespace}/{gateway.name} spec.servers[{index}]"
    protocol = server["port"]["protocol"].upper()
    if protocol not in PROTOCOLS:
        raise BuildError(f"{where}: tls.mode PASSTHROUGH needs protocol HTTPS or TLS, not {protocol}; change one")
    unused = [name for name in CERTIFICATE_FIELDS if name in settings]
    if unused:
        raise BuildError(
            f"{where}: tls.{unused[0]} has no effect with mode PASSTHROUGH (the gateway holds no certificate); remove it"
        )
    return True


def subset_of(name: str, of: str) -> bool:
    """Istio's host.Name.SubsetOf (pkg/config/host/name.go): `name` is `of` or within its wildcard."""
    if name == of or of == "*":
        return True
    return of.startswith("*.") and name.endswith(of[1:])


def check_tls(vs: Resource, bound: list[str], context: Context) -> None:
    """What Istio's webhook checks of every tls entry, and that none is bound to the mesh."""
    for index, entry in enumerate(gateway_entries(vs, bound, "tls")):
        where = f"{vs.key} tls[{index}]"
        if not entry.get("match"):
            raise BuildError(f"{where}: a tls entry needs at least one match with sniHosts, as Istio's validation says")
        for condition in entry["match"]:
            if not condition.get("sniHosts"):
                raise BuildError(f"{where}: every match needs sniHosts, as Istio's validation says; add them")
            for sni in condition["sniHosts"]:
                if not any(subset_of(sni, host) for host in vs.spec["hosts"]):
                    raise BuildError(
                        f"{where}: SNI host {sni} is within none of the VirtualService's hosts; add it to hosts"
                    )
        tcp_clusters(entry, where, vs, context, kind="tls")


def server_routes(
    port: int, gateway: str, server: str, services: list[tuple[Resource, bool]], taken: dict[str, str], context: Context
) -> list[SniRoute]:
    """The chains of one PASSTHROUGH server (`server` names it) on `port` of `gateway`; `services`: the
    VirtualServices bound to the gateway, oldest first, each with whether its hosts match the server's.
    `taken`: server name -> the chain that has it on this port, shared by the port's servers."""
    found = []
    for vs, host_matches in services:
        if not host_matches:
            continue
        for index, entry in enumerate(vs.spec.get("tls", [])):
            for match_index, condition in enumerate(entry["match"]):
                if not matches({"match": [condition]}, port, gateway, vs.namespace):
                    continue
                name = f"{server}.{vs.namespace}.{vs.name}.tls{index}.{match_index}"
                names = tuple(sorted(set(condition["sniHosts"])))
                repeated = sorted(set(names) & taken.keys())
                if repeated and context.release.minor <= 8:
                    raise BuildError(
                        f"{vs.key} tls[{index}]: SNI host {repeated[0]} on gateway port {port} is also routed by "
                        f"{taken[repeated[0]]}; Istio {context.release.version} gives Envoy both and Envoy rejects "
                        "the listener - keep it in one match"
                    )
                if repeated:
                    continue  # Istio skips the later match (CheckDuplicates): the first one wins
                taken.update(dict.fromkeys(names, name))
                clusters = tcp_clusters(entry, f"{vs.key} tls[{index}]", vs, context, kind="tls")
                found.append(SniRoute(name, () if "*" in names else names, clusters))
    return found


def check_terminating_overlap(port: int, routes: list[SniRoute], terminating: dict[str, str]) -> None:
    """A server name both a terminating server and a tls route claim would give Envoy two equal chains."""
    for route in routes:
        for sni in route.sni_hosts or ("*",):
            if sni in terminating:
                raise BuildError(
                    f"Gateway port {port}: SNI host {sni} is both terminated by {terminating[sni]} and passed through "
                    f"by {route.name}; Envoy rejects two filter chains for one name - keep one"
                )


# --- Envoy ----------------------------------------------------------------------------


def envoy_chains(item: Listener, log_dir: Path) -> list[dict[str, Any]]:
    """One filter chain per SNI route: matched on server names, no transport socket (the TLS stays the client's)."""
    chains = []
    for route in item.passthrough:
        chain: dict[str, Any] = {"name": route.name}
        if route.sni_hosts:
            chain["filter_chain_match"] = {"server_names": list(route.sni_hosts)}
        chains.append({**chain, "filters": [tcp_proxy(item.name, route.clusters, log_dir)]})
    return chains
