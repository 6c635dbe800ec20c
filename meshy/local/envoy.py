"""The mesh model -> Envoy v3 configuration (bootstrap, LDS and CDS documents).

Pure functions over model.py; the golden tests pin their output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshy.local import gateway_tls, passthrough
from meshy.local.jwt import JWT_AUTHN, jwt_filters
from meshy.local.model import (
    Cluster,
    Cors,
    Endpoint,
    Fault,
    HashPolicy,
    HeaderMatch,
    HeaderOps,
    Listener,
    Mirror,
    Proxy,
    Redirect,
    Route,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from meshy.local.origination import upstream_options, upstream_socket
from meshy.local.rbac import RBAC, rbac_filters
from meshy.local.tcp_routes import tcp_proxy_chains
from meshy.local.telemetry.accesslog import access_logs
from meshy.local.tls import client_cert_options, cluster_transport, endpoint_metadata, inbound_chains, inspector

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
CORS_POLICY = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
REGEX_PROGRAM_LIMIT = 32768
# Istio raises Envoy's 4 KiB limit on direct response bodies to 1 MiB (route.go at 1.30.3).
MAX_DIRECT_BODY = 1024 * 1024
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_CONFIGURATION = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
CONNECTIONS = (
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
# Istio lifts Envoy's circuit-breaker defaults (1024 connections, 3 retries) to this.
UNLIMITED = 4294967295
REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}


def duration(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return f"{text or '0'}s"


def address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def percent(value: float) -> dict[str, Any]:
    return {"numerator": round(value * 10000), "denominator": "MILLION"}


# --- Bootstrap -------------------------------------------------------------------


def ads_source() -> dict[str, Any]:
    """Resources that arrive on the proxy's ADS stream (config_source.proto's `ads`)."""
    return {"ads": {}, "resource_api_version": "V3"}


# Envoy retries a lost ADS stream with back-off; kept short so a restarted
# control plane is back within a second, not Envoy's default 30 s ceiling.
ADS_RETRY = {"retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}}
XDS_CLUSTER = "meshy-xds"


def admin(socket: Path) -> dict[str, Any]:
    """The admin interface on a Unix socket only its owner can connect to (Pipe.mode 0600)."""
    return {"address": {"pipe": {"path": str(socket), "mode": 0o600}}}


def runtime() -> dict[str, Any]:
    # Istio's bootstrap raises Envoy's RE2 program-size limit (100) to 32768 (pkg/bootstrap/config.go
    # at 1.30.3); validation holds each release to its own limit (release.py regex_program_limit).
    return {"layers": [{"name": "istio", "static_layer": {"re2.max_program_size.error_level": REGEX_PROGRAM_LIMIT}}]}


def bootstrap(proxy: Proxy, xds_socket: Path, admin_socket: Path) -> dict[str, Any]:
    """The node id names the proxy to the control plane; everything else comes over ADS."""
    return {
        "node": {"id": proxy.name, "cluster": proxy.name},
        "admin": admin(admin_socket),
        # Upstream connections leave from the proxy's own address, so the next proxy's
        # access log names the calling workload (Istio learns it by metadata exchange).
        "cluster_manager": {
            "upstream_bind_config": {"source_address": {"address": proxy.admin.address, "port_value": 0}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER, "retry_policy": ADS_RETRY}}],
                "set_node_on_first_message_only": True,
            },
            "lds_config": ads_source(),
            "cds_config": ads_source(),
        },
        "static_resources": {"clusters": [xds_cluster(xds_socket)]},
        "layered_runtime": runtime(),
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {"@type": CONNECTIONS, "max_active_downstream_connections": 50000},
                }
            ]
        },
    }


def xds_cluster(xds_socket: Path) -> dict[str, Any]:
    """The control plane on its Unix socket (a `pipe` address), spoken to in HTTP/2 (gRPC)."""
    return {
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": str(xds_socket)}}}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }


def discovery(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A DiscoveryResponse whose version is the hash of its resources."""
    body = json.dumps(resources, sort_keys=True).encode()
    return {"version_info": hashlib.sha256(body).hexdigest()[:16], "resources": resources}


def lds(proxy: Proxy, log_dir: Path) -> dict[str, Any]:
    return discovery([listener(item, log_dir) for item in proxy.listeners])


def rds(proxy: Proxy) -> dict[str, dict[str, Any]]:
    """One route configuration per listener, each as its own document.

    Keyed `rds_<listener>.json`, the names of the files proxies once watched, so
    the golden files stay comparable across that change.
    """
    return {f"rds_{item.name}.json": discovery([route_configuration(item)]) for item in http_listeners(proxy)}


def http_listeners(proxy: Proxy) -> list[Listener]:
    """The listeners that ask for a route configuration (a TCP listener has none: Envoy would never ACK one)."""
    return [item for item in proxy.listeners if serves_http(item)]


def serves_http(item: Listener) -> bool:
    """Whether a listener has a connection manager: not a TCP server's, nor one of PASSTHROUGH servers only."""
    return not item.tcp and (bool(item.tls) or not item.passthrough)


def cds(proxy: Proxy) -> dict[str, Any]:
    return discovery([cluster(item) for item in proxy.clusters])


# --- Listeners and routes -------------------------------------------------------------


def route_configuration(item: Listener, hosts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """hosts: the listener's virtual hosts as JSON when the caller has them already (kept from an earlier apply)."""
    return {
        "@type": ROUTE_CONFIGURATION,
        "name": item.name,
        # Routes may name clusters that arrive later or never exist: answer 503, not reject.
        "validate_clusters": False,
        "max_direct_response_body_size_bytes": MAX_DIRECT_BODY,
        **({"ignore_port_in_host_matching": True} if item.strip_port else {}),
        "virtual_hosts": hosts if hosts is not None else [virtual_host(vh) for vh in item.virtual_hosts],
    }


@dataclass(frozen=True)
class HttpFilter:
    """An HTTP filter of every listener: its place is its index in HTTP_FILTERS.

    `per_route` gives a route's typed_per_filter_config for the filter, or None
    when the route does not use it; several filters' configs sit side by side.
    """

    name: str
    type_url: str
    per_route: Callable[[Route], dict[str, Any] | None]
    # A filter configured per listener instead: its entries in the chain (none where unused).
    per_listener: Callable[[Listener], list[dict[str, Any]]] | None = None


def route_fault(item: Route) -> dict[str, Any] | None:
    return fault(item.fault) if item.fault else None


def route_cors(item: Route) -> dict[str, Any] | None:
    return cors(item.cors) if item.cors else None


# Istio's order: authorization (RBAC, DENY then ALLOW) before the rest (listener_builder.go at 1.30.3);
# CORS, then fault injection; the router is always last. Istio 1.8 put CORS in the
# route itself (a field Envoy has since removed); the per-route filter config behaves the same.
HTTP_FILTERS = (
    # Istio's order: authentication (jwt_authn) before authorization (RBAC).
    HttpFilter("envoy.filters.http.jwt_authn", JWT_AUTHN, lambda item: None, jwt_filters),
    HttpFilter("envoy.filters.http.rbac", RBAC, lambda item: None, lambda item: rbac_filters(item.authz)),
    HttpFilter("envoy.filters.http.cors", CORS, route_cors),
    HttpFilter("envoy.filters.http.fault", FAULT, route_fault),
    HttpFilter("envoy.filters.http.router", ROUTER, lambda item: None),
)


def per_filter_config(item: Route) -> dict[str, Any]:
    configs = {f.name: f.per_route(item) for f in HTTP_FILTERS}
    return {name: config for name, config in configs.items() if config is not None}


def http_filters(item: Listener) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    for entry in HTTP_FILTERS:
        if entry.per_listener is not None:
            chain += entry.per_listener(item)
        else:
            chain.append({"name": entry.name, "typed_config": {"@type": entry.type_url}})
    return chain


def listener(item: Listener, log_dir: Path) -> dict[str, Any]:
    """An HTTP listener, or a gateway's TCP one; its access logs go to files in `log_dir` (the proxy's own directory)."""
    if item.tcp:
        return {
            "@type": LISTENER,
            "name": item.name,
            "address": address(item.address, item.port),
            **tcp_proxy_chains(item, log_dir),
        }
    if not serves_http(item):
        return {
            "@type": LISTENER,
            "name": item.name,
            "address": address(item.address, item.port),
            "listener_filters": [inspector()],
            "filter_chains": passthrough.envoy_chains(item, log_dir),
        }
    # Routes come by RDS, as in Istio: a route change reaches open connections at
    # once instead of waiting for the listener to drain.
    manager: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": item.name,
        "rds": {"route_config_name": item.name, "config_source": ads_source()},
        "http_filters": http_filters(item),
        "access_log": access_logs(log_dir, item.name),
    }
    manager.update(connection_options(item))
    if item.server_name:
        manager["server_name"] = item.server_name
    if item.forward_proxy:
        manager["http_protocol_options"] = {"allow_absolute_url": True}
    manager.update(client_cert_options(item))
    if item.tls:
        manager.update(gateway_tls.client_cert_options())
    filters = [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]
    chains = gateway_tls.filter_chains(item, filters) if item.tls else inbound_chains(item, filters)
    if item.passthrough:
        chains["filter_chains"] = chains["filter_chains"] + passthrough.envoy_chains(item, log_dir)
    return {"@type": LISTENER, "name": item.name, "address": address(item.address, item.port), **chains}


def connection_options(item: Listener) -> dict[str, Any]:
    """What every Istio connection manager sets (listener_builder.go at 1.30.3, listener.go at 1.8.6):
    paths normalized with escaped slashes kept, websocket upgrades, and on gateways the
    client's address as the remote one (so x-forwarded-for reaches the app)."""
    return {
        "normalize_path": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "use_remote_address": item.remote_address,
    }


def virtual_host(vh: VirtualHost) -> dict[str, Any]:
    result: dict[str, Any] = {"name": vh.name, "domains": list(vh.domains), "routes": [route(r) for r in vh.routes]}
    if vh.attempt_count:
        result["include_request_attempt_count"] = True
    return result


def string_match(match: StringMatch) -> dict[str, Any]:
    if match.kind == "regex":
        return {"safe_regex": {"regex": match.value}}
    return {match.kind: match.value}


def header_matcher(header: HeaderMatch) -> dict[str, Any]:
    if header.match.kind == "present":
        result: dict[str, Any] = {"name": header.name, "present_match": True}
    else:
        result = {"name": header.name, "string_match": string_match(header.match)}
    if header.invert:
        result["invert_match"] = True
    if header.missing_as_empty:
        result["treat_missing_header_as_empty"] = True
    return result


def query_matcher(name: str, match: StringMatch) -> dict[str, Any]:
    if match.kind == "present":
        return {"name": name, "present_match": True}
    return {"name": name, "string_match": string_match(match)}


def route_match(item: Route) -> dict[str, Any]:
    uri = item.match.uri
    if uri is None:
        result: dict[str, Any] = {"prefix": "/"}
    elif uri.kind == "exact":
        result = {"path": uri.value}
    elif uri.kind == "prefix":
        result = {"prefix": uri.value}
    else:
        result = {"safe_regex": {"regex": uri.value}}
    if item.match.headers:
        result["headers"] = [header_matcher(header) for header in item.match.headers]
    if item.match.query:
        result["query_parameters"] = [query_matcher(name, m) for name, m in item.match.query]
    if item.match.ignore_case:
        result["case_sensitive"] = False
    return result


def route(item: Route) -> dict[str, Any]:
    result: dict[str, Any] = {"name": item.name, "match": route_match(item)}
    if item.direct:
        result["direct_response"] = {"status": item.direct.status}
        if item.direct.body is not None:
            kind = "inline_bytes" if item.direct.base64 else "inline_string"
            result["direct_response"]["body"] = {kind: item.direct.body}
    elif item.redirect:
        result["redirect"] = redirect(item.redirect)
    else:
        result["route"] = route_action(item)
    if configs := per_filter_config(item):
        result["typed_per_filter_config"] = configs
    request, response = route_header_ops(item)
    result.update(header_ops(request, "request"))
    result.update(header_ops(response, "response"))
    return result


def route_header_ops(item: Route) -> tuple[HeaderOps, HeaderOps]:
    """The route's header operations; a single destination's own are appended (route.go processDestination)."""
    if len(item.clusters) != 1:
        return item.request_headers, item.response_headers
    own = item.clusters[0]
    return merged(item.request_headers, own.request_headers), merged(item.response_headers, own.response_headers)


def merged(first: HeaderOps, then: HeaderOps) -> HeaderOps:
    return HeaderOps(first.set + then.set, first.add + then.add, first.remove + then.remove)


def mirror_policy(item: Mirror) -> dict[str, Any]:
    result: dict[str, Any] = {"cluster": item.cluster, "runtime_fraction": {"default_value": percent(item.percent)}}
    if not item.shadow_suffix:
        result["disable_shadow_host_suffix_append"] = True
    return result


def redirect(item: Redirect) -> dict[str, Any]:
    result: dict[str, Any] = {"response_code": REDIRECT_CODES[item.code]}
    if item.path:
        result["path_redirect"] = item.path
    if item.host:
        result["host_redirect"] = item.host
    if item.scheme:
        result["scheme_redirect"] = item.scheme
    if item.port:
        result["port_redirect"] = item.port
    return result


def weighted_cluster(item: WeightedCluster) -> dict[str, Any]:
    result: dict[str, Any] = {"name": item.cluster, "weight": item.weight}
    result.update(header_ops(item.request_headers, "request"))
    result.update(header_ops(item.response_headers, "response"))
    if item.authority:
        result["host_rewrite_literal"] = item.authority
    return result


def cors(item: Cors) -> dict[str, Any]:
    result: dict[str, Any] = {
        "@type": CORS_POLICY,
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
    }
    if item.allow_origins:
        result["allow_origin_string_match"] = [string_match(m) for m in item.allow_origins]
    for field, values in (
        ("allow_methods", item.allow_methods),
        ("allow_headers", item.allow_headers),
        ("expose_headers", item.expose_headers),
    ):
        if values:
            result[field] = ",".join(values)
    if item.max_age is not None:
        result["max_age"] = str(item.max_age)
    if item.allow_credentials is not None:
        result["allow_credentials"] = item.allow_credentials
    return result


def route_action(item: Route) -> dict[str, Any]:
    action: dict[str, Any] = {
        "timeout": duration(item.timeout),
        "cluster_not_found_response_code": "SERVICE_UNAVAILABLE",
    }
    if len(item.clusters) == 1:
        action["cluster"] = item.clusters[0].cluster
    else:
        action["weighted_clusters"] = {"clusters": [weighted_cluster(c) for c in item.clusters]}
    if item.retry:
        retry: dict[str, Any] = {
            "retry_on": item.retry.retry_on,
            "num_retries": item.retry.attempts,
            "host_selection_retry_max_attempts": 5,
        }
        if item.retry.previous_hosts:
            retry["retry_host_predicate"] = [
                {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": PREVIOUS_HOSTS}}
            ]
        if item.retry.status_codes:
            retry["retriable_status_codes"] = list(item.retry.status_codes)
        if item.retry.per_try_timeout is not None:
            retry["per_try_timeout"] = duration(item.retry.per_try_timeout)
        action["retry_policy"] = retry
    if item.hash_policies:
        action["hash_policy"] = [hash_policy(h) for h in item.hash_policies]
    if item.mirrors:
        action["request_mirror_policies"] = [mirror_policy(m) for m in item.mirrors]
    if item.prefix_rewrite is not None:
        action["prefix_rewrite"] = item.prefix_rewrite
    # route.go processDestination: a single destination's authority applies when no rewrite is set.
    authority = item.authority_rewrite or (item.clusters[0].authority if len(item.clusters) == 1 else None)
    if authority:
        action["host_rewrite_literal"] = authority
    return action


def hash_policy(item: HashPolicy) -> dict[str, Any]:
    if item.kind == "header":
        return {"header": {"header_name": item.name}}
    if item.kind == "query":
        return {"query_parameter": {"name": item.name}}
    if item.kind == "source_ip":
        return {"connection_properties": {"source_ip": True}}
    cookie: dict[str, Any] = {"name": item.name}
    if item.path:
        cookie["path"] = item.path
    if item.ttl is not None:
        cookie["ttl"] = duration(item.ttl)
    return {"cookie": cookie}


def fault(item: Fault) -> dict[str, Any]:
    result: dict[str, Any] = {"@type": FAULT}
    if item.delay is not None:
        result["delay"] = {"fixed_delay": duration(item.delay), "percentage": percent(item.delay_percent)}
    if item.abort_status is not None:
        result["abort"] = {"http_status": item.abort_status, "percentage": percent(item.abort_percent)}
    return result


def header_ops(ops: HeaderOps, direction: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    added = [
        {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for key, value in ops.set
    ] + [{"header": {"key": key, "value": value}, "append_action": "APPEND_IF_EXISTS_OR_ADD"} for key, value in ops.add]
    if added:
        result[f"{direction}_headers_to_add"] = added
    if ops.remove:
        result[f"{direction}_headers_to_remove"] = list(ops.remove)
    return result


# --- Clusters ---------------------------------------------------------------------------


def cluster(item: Cluster) -> dict[str, Any]:
    result: dict[str, Any] = {
        "@type": CLUSTER,
        "name": item.name,
        "connect_timeout": duration(item.connect_timeout),
        "lb_policy": item.lb,
    }
    if item.dns_name:
        result["type"] = "STRICT_DNS"
        endpoints = [Endpoint(item.dns_name, item.dns_port)]
    else:
        result["type"] = "STATIC"
        endpoints = list(item.endpoints)
    result["load_assignment"] = {
        "cluster_name": item.name,
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": address(ep.address, ep.port)}, **endpoint_metadata(ep, item)}
                    for ep in endpoints
                ]
            }
        ],
    }
    result.update(upstream_socket(item.origination) if item.origination else cluster_transport(item))
    breaker = item.circuit
    result["circuit_breakers"] = {
        "thresholds": [
            {
                "max_connections": (breaker and breaker.max_connections) or UNLIMITED,
                "max_pending_requests": (breaker and breaker.max_pending_requests) or UNLIMITED,
                "max_requests": (breaker and breaker.max_requests) or UNLIMITED,
                "max_retries": (breaker and breaker.max_retries) or UNLIMITED,
            }
        ]
    }
    if item.outlier:
        # As Istio's applyOutlierDetection: success-rate ejection off, a consecutive
        # count enforced at 100% when above 0, and the panic threshold from minHealthPercent.
        outlier: dict[str, Any] = {"enforcing_success_rate": 0}
        if item.outlier.consecutive_5xx is not None:
            outlier["consecutive_5xx"] = item.outlier.consecutive_5xx
            outlier["enforcing_consecutive_5xx"] = 100 if item.outlier.consecutive_5xx > 0 else 0
        if item.outlier.consecutive_gateway is not None:
            outlier["consecutive_gateway_failure"] = item.outlier.consecutive_gateway
            outlier["enforcing_consecutive_gateway_failure"] = 100 if item.outlier.consecutive_gateway > 0 else 0
        if item.outlier.interval is not None:
            outlier["interval"] = duration(item.outlier.interval)
        if item.outlier.base_ejection is not None:
            outlier["base_ejection_time"] = duration(item.outlier.base_ejection)
        if item.outlier.max_ejection_percent is not None:
            outlier["max_ejection_percent"] = item.outlier.max_ejection_percent
        result["outlier_detection"] = outlier
        result["common_lb_config"] = {"healthy_panic_threshold": {"value": item.outlier.min_health_percent}}
    if item.ring_size:
        result["ring_hash_lb_config"] = {"minimum_ring_size": item.ring_size}
    common: dict[str, Any] = {}
    if item.max_requests_per_connection:
        common["max_requests_per_connection"] = item.max_requests_per_connection
    if item.idle_timeout is not None:
        common["idle_timeout"] = duration(item.idle_timeout)
    upstream = upstream_options(item.origination) if item.origination else {}
    if common or upstream:
        options = {"@type": HTTP_OPTIONS, **upstream}
        if common:
            options["common_http_protocol_options"] = common
        options["explicit_http_config"] = {"http_protocol_options": {}}
        result["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options}
    return result
