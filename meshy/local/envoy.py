"""The mesh model -> Envoy v3 configuration (bootstrap, LDS and CDS documents).

Pure functions over model.py; the golden tests pin their output.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from meshy.local.model import Cluster, Fault, HeaderOps, Listener, Proxy, Route, StringMatch, VirtualHost
from meshy.local.telemetry.accesslog import access_logs

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
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


def config_source(config_dir: Path, name: str) -> dict[str, Any]:
    """A file Envoy watches: a new version is written beside it and renamed into place."""
    return {
        "path_config_source": {"path": str(config_dir / name), "watched_directory": {"path": str(config_dir)}},
        "resource_api_version": "V3",
    }


def rds_file(listener_name: str) -> str:
    return f"rds_{listener_name}.json"


def bootstrap(proxy: Proxy, config_dir: Path) -> dict[str, Any]:
    def source(name: str) -> dict[str, Any]:
        return config_source(config_dir, name)

    return {
        "node": {"id": proxy.name, "cluster": proxy.name},
        "admin": {"address": address(proxy.admin.address, proxy.admin.port)},
        # Upstream connections leave from the proxy's own address, so the next proxy's
        # access log names the calling workload (Istio learns it by metadata exchange).
        "cluster_manager": {
            "upstream_bind_config": {"source_address": {"address": proxy.admin.address, "port_value": 0}}
        },
        "dynamic_resources": {"lds_config": source("lds.json"), "cds_config": source("cds.json")},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {"@type": CONNECTIONS, "max_active_downstream_connections": 50000},
                }
            ]
        },
    }


def discovery(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A DiscoveryResponse whose version is the hash of its resources."""
    body = json.dumps(resources, sort_keys=True).encode()
    return {"version_info": hashlib.sha256(body).hexdigest()[:16], "resources": resources}


def lds(proxy: Proxy, config_dir: Path) -> dict[str, Any]:
    return discovery([listener(item, config_dir) for item in proxy.listeners])


def rds(proxy: Proxy) -> dict[str, dict[str, Any]]:
    """One route-configuration file per listener, by file name."""
    return {rds_file(item.name): discovery([route_configuration(item)]) for item in proxy.listeners}


def cds(proxy: Proxy) -> dict[str, Any]:
    return discovery([cluster(item) for item in proxy.clusters])


# --- Listeners and routes -------------------------------------------------------------


def route_configuration(item: Listener) -> dict[str, Any]:
    return {
        "@type": ROUTE_CONFIGURATION,
        "name": item.name,
        # Routes may name clusters that arrive later or never exist: answer 503, not reject.
        "validate_clusters": False,
        "virtual_hosts": [virtual_host(vh) for vh in item.virtual_hosts],
    }


def listener(item: Listener, config_dir: Path) -> dict[str, Any]:
    # Routes come by RDS, as in Istio: a route change reaches open connections at
    # once instead of waiting for the listener to drain.
    manager: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": item.name,
        "rds": {"route_config_name": item.name, "config_source": config_source(config_dir, rds_file(item.name))},
        "http_filters": [
            {"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
        ],
        "access_log": access_logs(config_dir, item.name),
    }
    if item.forward_proxy:
        manager["http_protocol_options"] = {"allow_absolute_url": True}
    if item.strip_port:
        manager["strip_any_host_port"] = True
    return {
        "@type": LISTENER,
        "name": item.name,
        "address": address(item.address, item.port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }


def virtual_host(vh: VirtualHost) -> dict[str, Any]:
    return {"name": vh.name, "domains": list(vh.domains), "routes": [route(r) for r in vh.routes]}


def string_match(match: StringMatch) -> dict[str, Any]:
    if match.kind == "regex":
        return {"safe_regex": {"regex": match.value}}
    return {match.kind: match.value}


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
        result["headers"] = [{"name": name, "string_match": string_match(m)} for name, m in item.match.headers]
    return result


def route(item: Route) -> dict[str, Any]:
    result: dict[str, Any] = {"name": item.name, "match": route_match(item)}
    if item.direct:
        status, body = item.direct
        result["direct_response"] = {"status": status, "body": {"inline_string": body}}
    elif item.redirect:
        redirect: dict[str, Any] = {"response_code": REDIRECT_CODES[item.redirect.code]}
        if item.redirect.path:
            redirect["path_redirect"] = item.redirect.path
        if item.redirect.host:
            redirect["host_redirect"] = item.redirect.host
        result["redirect"] = redirect
    else:
        result["route"] = route_action(item)
    if item.fault:
        result["typed_per_filter_config"] = {"envoy.filters.http.fault": fault(item.fault)}
    result.update(header_ops(item.request_headers, "request"))
    result.update(header_ops(item.response_headers, "response"))
    return result


def route_action(item: Route) -> dict[str, Any]:
    action: dict[str, Any] = {
        "timeout": duration(item.timeout),
        "cluster_not_found_response_code": "SERVICE_UNAVAILABLE",
    }
    if len(item.clusters) == 1:
        action["cluster"] = item.clusters[0].cluster
    else:
        action["weighted_clusters"] = {"clusters": [{"name": c.cluster, "weight": c.weight} for c in item.clusters]}
    if item.retry:
        retry: dict[str, Any] = {
            "retry_on": item.retry.retry_on,
            "num_retries": item.retry.attempts,
            "retry_host_predicate": [
                {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": PREVIOUS_HOSTS}}
            ],
            "host_selection_retry_max_attempts": 5,
        }
        if item.retry.status_codes:
            retry["retriable_status_codes"] = list(item.retry.status_codes)
        if item.retry.per_try_timeout is not None:
            retry["per_try_timeout"] = duration(item.retry.per_try_timeout)
        action["retry_policy"] = retry
    if item.mirror_cluster:
        action["request_mirror_policies"] = [
            {"cluster": item.mirror_cluster, "runtime_fraction": {"default_value": percent(item.mirror_percent)}}
        ]
    if item.prefix_rewrite is not None:
        action["prefix_rewrite"] = item.prefix_rewrite
    if item.authority_rewrite:
        action["host_rewrite_literal"] = item.authority_rewrite
    return action


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
        endpoints = [(item.dns_name, item.dns_port)]
    else:
        result["type"] = "STATIC"
        endpoints = [(ep.address, ep.port) for ep in item.endpoints]
    result["load_assignment"] = {
        "cluster_name": item.name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(h, p)}} for h, p in endpoints]}],
    }
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
        outlier: dict[str, Any] = {}
        if item.outlier.consecutive_5xx is not None:
            outlier["consecutive_5xx"] = item.outlier.consecutive_5xx
        if item.outlier.consecutive_gateway is not None:
            outlier["consecutive_gateway_failure"] = item.outlier.consecutive_gateway
            outlier["enforcing_consecutive_gateway_failure"] = 100
        if item.outlier.interval is not None:
            outlier["interval"] = duration(item.outlier.interval)
        if item.outlier.base_ejection is not None:
            outlier["base_ejection_time"] = duration(item.outlier.base_ejection)
        if item.outlier.max_ejection_percent is not None:
            outlier["max_ejection_percent"] = item.outlier.max_ejection_percent
        result["outlier_detection"] = outlier
    if item.max_requests_per_connection:
        result["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "common_http_protocol_options": {"max_requests_per_connection": item.max_requests_per_connection},
                "explicit_http_config": {"http_protocol_options": {}},
            }
        }
    return result
