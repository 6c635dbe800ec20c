"""VirtualServices -> routes, as Istio translates them (route.go at the matrix's tags). Pure, like build.py."""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any

from meshy.local.model import (
    Cors,
    DirectResponse,
    Fault,
    HashPolicy,
    HeaderMatch,
    HeaderOps,
    Match,
    Mirror,
    Redirect,
    Retry,
    Route,
    StringMatch,
    WeightedCluster,
)
from meshy.local.release import DEFAULT_RELEASE, IstioRelease
from meshy.local.resources import BuildError, Resource
from meshy.local.shapes import plain, re2_program_size, seconds
from meshy.local.upstreams import RegistryHost, cluster_name, resolve_host, subset_labels, traffic_policy
from meshy.local.webhook import check_http_webhook

MESH = "mesh"
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
RETRY_CONDITIONS = {
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
}
REDIRECT_CODES = {301, 302, 303, 307, 308}

# --- Virtual services -> routes -------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """Where a route is being built: the mesh (sidecars) or a gateway, and a port."""

    gateway: str  # "mesh" or "namespace/name" of a Gateway
    port: int | None  # None: every port (validation)
    registry: dict[str, RegistryHost]
    rules: dict[str, Resource]
    release: IstioRelease = DEFAULT_RELEASE

    def at(self, gateway: str, port: int | None) -> Context:
        return dataclasses.replace(self, gateway=gateway, port=port)


def vs_gateways(vs: Resource) -> list[str]:
    return [qualify_gateway(g, vs.namespace) for g in vs.spec.get("gateways") or [MESH]]


def qualify_gateway(name: str, namespace: str) -> str:
    return name if name == MESH or "/" in name else f"{namespace}/{name}"


def http_routes(vs: Resource, context: Context) -> list[Route]:
    """The routes of a VirtualService where context applies, up to its first catch-all.

    As BuildHTTPRoutesForVirtualService (route.go at each tag) does: an http entry
    without match, or a match that catches all, ends the list.
    """
    routes = []
    for index, http in enumerate(vs.spec.get("http", [])):
        where = f"{vs.key} http[{index}]"
        if not http.get("match"):
            routes.append(http_route(http, {}, http.get("name") or f"{vs.name}.{index}.0", where, vs, context))
            break
        for match_index, match in enumerate(http["match"]):
            if not applies(match, vs, context):
                continue
            name = http.get("name") or f"{vs.name}.{index}.{match_index}"
            route = http_route(http, match, name, where, vs, context)
            routes.append(route)
            if ends_routes(match, route, context.release):
                return routes
    return routes


def ends_routes(match: dict[str, Any], route: Route, release: IstioRelease) -> bool:
    """Whether a match catches every request, so later routes of its VirtualService are dropped."""
    if release.minor <= 8:
        # 1.8.6 isCatchAllMatch looks at the Istio match: port and gateways count as conditions.
        return is_catch_all(route, release) and not match.get("port") and not match.get("gateways")
    return is_catch_all(route, release)


def is_catch_all(route: Route, release: IstioRelease) -> bool:
    """route.go isCatchAllRoute: path prefix '/' (or the release's catch-all regex) and no header match."""
    uri = route.match.uri
    path_all = uri is None or (uri.kind == "prefix" and uri.value == "/")
    path_all = path_all or (uri is not None and uri.kind == "regex" and uri.value == release.catch_all_regex)
    return path_all and not route.match.headers and not route.match.query


def sort_catch_all_last(routes: list[Route], release: IstioRelease) -> list[Route]:
    """Gateway routes merged from several VirtualServices: catch-alls after the rest, order kept otherwise.

    1.8.6 gateway.go calls CombineVHostRoutes, 1.30.3 gateway.go SortVHostRoutes (both in route.go).
    """
    return [r for r in routes if not is_catch_all(r, release)] + [r for r in routes if is_catch_all(r, release)]


def applies(match: dict[str, Any], vs: Resource, context: Context) -> bool:
    gateways = [qualify_gateway(g, vs.namespace) for g in match.get("gateways", [])]
    if gateways and context.gateway not in gateways:
        return False
    return not ("port" in match and context.port is not None and match["port"] != context.port)


def http_route(http, match, name, where, vs: Resource, context: Context) -> Route:
    """One Envoy route of an http entry and one of its matches (route.go TranslateRoute)."""
    check_http_entry(http, where, context.release)
    destinations = http.get("route", [])
    weights = route_weights(destinations, where, context.release) if destinations else []
    clusters = tuple(
        weighted_cluster(d, w, f"{where} route[{i}]", vs, context)
        for i, (d, w) in enumerate(zip(destinations, weights, strict=True))
        if w > 0
    )
    hashes = [
        hash_policy(d["destination"], where, vs, context) for d, w in zip(destinations, weights, strict=True) if w
    ]
    hashes = [h for h in hashes if h]
    retry = retry_policy(http.get("retries"), where, context.release) if destinations else None
    if retry and hashes and len(destinations) == 1 and context.release.minor >= 23:
        # From Istio 1.23 retry.go ConvertPolicy drops the previous-hosts predicate under consistent hashing.
        retry = dataclasses.replace(retry, previous_hosts=False)
    rewrite = http.get("rewrite", {})
    headers = http.get("headers", {})
    request, authority = request_header_ops(headers.get("request"), where, context.release)
    return Route(
        name=name,
        match=route_match(match, where, context.release),
        clusters=clusters,
        redirect=redirect_of(http["redirect"], where, context.port) if http.get("redirect") else None,
        direct=direct_response(http["directResponse"], where) if http.get("directResponse") else None,
        retry=retry,
        hash_policies=tuple(hashes),
        timeout=seconds(http["timeout"]) if "timeout" in http else 0.0,
        fault=fault_of(http.get("fault")),
        mirrors=mirrors_of(http, where, vs, context),
        cors=cors_of(http.get("corsPolicy"), where, context.release),
        prefix_rewrite=rewrite.get("uri"),
        # route.go applyHTTPRouteDestination: rewrite.authority wins over an ':authority' header.
        authority_rewrite=rewrite.get("authority") or authority,
        request_headers=request,
        response_headers=response_header_ops(headers.get("response"), where, context.release),
    )


# Pairs an http entry may not hold together (virtualservice.go validateHTTPRoute at 1.30.3).
EXCLUSIVE = (
    ("fault", "redirect"),
    ("rewrite", "redirect"),
    ("fault", "directResponse"),
    ("rewrite", "directResponse"),
    ("mirror", "mirrors"),
)


def check_http_entry(http: dict[str, Any], where: str, release: IstioRelease) -> None:
    """The combinations Istio's validation refuses in one http entry."""
    actions = [key for key in ("route", "redirect", "directResponse") if http.get(key)]
    if len(actions) != 1:
        raise BuildError(f"{where}: set exactly one of route, redirect or directResponse")
    check_http_webhook(http, where, release)
    for first, second in EXCLUSIVE:
        if http.get(first) is not None and http.get(second) is not None:
            raise BuildError(f"{where}: {first} and {second} cannot be set together")
    request = (http.get("headers") or {}).get("request") or {}
    authorities = [k for verb in ("set", "add") for k in request.get(verb, {}) if k.lower() in (":authority", "host")]
    if release.authority_header_rewrite and len(authorities) + bool((http.get("rewrite") or {}).get("authority")) > 1:
        # virtualservice.go validateAuthorityRewrite (from 1.10): one place sets the authority.
        raise BuildError(f"{where}: the authority is set more than once (rewrite.authority, headers.request); keep one")


def weighted_cluster(
    destination: dict[str, Any], weight: int, where: str, vs: Resource, context: Context
) -> WeightedCluster:
    """A destination with its own header operations (route.go processWeightedDestination)."""
    cluster = destination_cluster(destination["destination"], where, vs.namespace, context.registry, context.rules)
    headers = destination.get("headers", {})
    request, authority = request_header_ops(headers.get("request"), where, context.release)
    response = response_header_ops(headers.get("response"), where, context.release)
    return WeightedCluster(cluster, weight, request, response, authority)


def mirrors_of(http: dict[str, Any], where: str, vs: Resource, context: Context) -> tuple[Mirror, ...]:
    """mirror (with mirrorPercentage) and mirrors; a percentage of 0 mirrors nothing (route.go MirrorPercent)."""
    wanted = []
    if http.get("mirror"):
        wanted.append((http["mirror"], http.get("mirrorPercentage")))
    wanted += [(item["destination"], item.get("percentage")) for item in http.get("mirrors", [])]
    result = []
    for destination, percentage in wanted:
        percent = 100.0 if percentage is None else float(percentage.get("value", 0.0))
        if percent > 0:
            cluster = destination_cluster(destination, where, vs.namespace, context.registry, context.rules)
            result.append(Mirror(cluster, percent, context.release.shadow_host_suffix))
    return tuple(result)


def cors_of(spec: dict[str, Any] | None, where: str, release: IstioRelease) -> Cors | None:
    """route.go TranslateCORSPolicy: allowOrigins wins over the deprecated allowOrigin (exact matches)."""
    if spec is None:
        return None
    origins = [string_match(m, "corsPolicy.allowOrigins", where, release) for m in spec.get("allowOrigins", [])]
    if "allowOrigins" not in spec:
        origins = [StringMatch("exact", origin) for origin in spec.get("allowOrigin", [])]
    return Cors(
        allow_origins=tuple(origins),
        allow_methods=tuple(spec.get("allowMethods", [])),
        allow_headers=tuple(spec.get("allowHeaders", [])),
        expose_headers=tuple(spec.get("exposeHeaders", [])),
        max_age=int(seconds(spec["maxAge"])) if "maxAge" in spec else None,
        allow_credentials=spec.get("allowCredentials"),
    )


def direct_response(spec: dict[str, Any], where: str) -> DirectResponse:
    body = spec.get("body") or {}
    if len(body) > 1:
        raise BuildError(f"{where}: directResponse.body takes string or bytes, not both")
    if "bytes" in body:
        try:
            base64.b64decode(body["bytes"], validate=True)
        except ValueError:
            raise BuildError(f"{where}: directResponse.body.bytes must be base64; encode the body") from None
        return DirectResponse(spec["status"], body["bytes"], base64=True)
    return DirectResponse(spec["status"], body.get("string"))


def route_weights(destinations: list[dict[str, Any]], where: str, release: IstioRelease) -> list[int]:
    """Each destination's weight; an unset weight is 0, a single destination takes everything."""
    if len(destinations) == 1:
        return [100]
    weights = [d.get("weight", 0) for d in destinations]
    total = sum(weights)
    if not release.relative_weights:
        if any(w > 100 for w in weights):
            raise BuildError(f"{where}: Istio {release.version} takes weights from 0 to 100, not {max(weights)}")
        if total != 100:
            raise BuildError(
                f"{where}: destination weights add up to {total}; Istio {release.version} needs a total of 100"
            )
    elif total == 0:
        raise BuildError(f"{where}: destination weights add up to 0; give at least one destination a weight")
    return weights


def destination_cluster(destination, where, namespace, registry, rules) -> str:
    return cluster_name(*destination_key(destination, where, namespace, registry, rules))


def destination_key(destination, where, namespace, registry, rules) -> tuple[str, int, str]:
    """The registry host, port and subset a destination names."""
    host = resolve_host(destination["host"], namespace, registry)
    entry = registry.get(host)
    port = destination.get("port", {}).get("number")
    if port is None:
        if entry is not None and len(entry.ports) != 1:
            raise BuildError(f"{where}: destination {destination['host']} has several ports; set port.number")
        # An unknown host names a cluster that does not exist: Envoy answers 503, as Istio does.
        port = next(iter(entry.ports)) if entry else 0
    subset = destination.get("subset", "")
    if subset and subset_labels(rules.get(host), subset) is None:
        raise BuildError(
            f"{where}: subset {subset!r} of {destination['host']} is defined by no DestinationRule; "
            "apply the DestinationRule first"
        )
    return host, port, subset


def hash_policy(destination, where, vs: Resource, context: Context) -> HashPolicy | None:
    """The consistent hash of a destination's DestinationRule (route.go consistentHashToHashPolicy)."""
    host, port, subset = destination_key(destination, where, vs.namespace, context.registry, context.rules)
    spec = traffic_policy(context.rules.get(host), subset, port).get("loadBalancer", {}).get("consistentHash")
    if spec is None:
        return None
    if "httpHeaderName" in spec:
        return HashPolicy("header", spec["httpHeaderName"])
    if "httpCookie" in spec:
        cookie = spec["httpCookie"]
        ttl = seconds(cookie["ttl"]) if "ttl" in cookie else None
        return HashPolicy("cookie", cookie["name"], cookie.get("path"), ttl)
    if "httpQueryParameterName" in spec:
        return HashPolicy("query", spec["httpQueryParameterName"])
    if spec.get("useSourceIp"):
        return HashPolicy("source_ip")
    return None


def string_match(
    spec: dict[str, str] | None, field: str, where: str, release: IstioRelease = DEFAULT_RELEASE
) -> StringMatch:
    """An Istio StringMatch; empty (or regex '*') is a presence match, as route.go translateHeaderMatch makes it."""
    spec = spec or {}
    if len(spec) > 1:
        raise BuildError(f"{where}: {field} takes one of exact, prefix, regex, not {len(spec)} of them")
    if not spec:
        return StringMatch("present", "")
    ((kind, value),) = spec.items()
    if kind in ("prefix", "regex") and value == "" and not (field == "uri" and kind == "prefix"):
        # validation.go validateStringMatch; Envoy's StringMatcher refuses it too (only a uri prefix may be empty).
        raise BuildError(f"{where}: {field}.{kind} must not be empty")
    if kind == "regex" and value != "*" and (re2_program_size(value) or 0) > release.regex_program_limit:
        raise BuildError(
            f"{where}: {field}.regex compiles to more than Istio {release.version}'s RE2 limit of "
            f"{release.regex_program_limit}; simplify it"
        )
    if kind == "regex" and value == "*":
        return StringMatch("present", "")
    return StringMatch(kind, value)


def route_match(match: dict[str, Any], where: str, release: IstioRelease = DEFAULT_RELEASE) -> Match:
    """route.go TranslateRouteMatch: headers and withoutHeaders sorted by name, then method and authority."""
    headers = [
        HeaderMatch(name.lower(), string_match(spec, f"headers.{plain(name)}", where, release))
        for name, spec in match.get("headers", {}).items()
    ]
    for name, spec in match.get("withoutHeaders", {}).items():
        matcher = string_match(spec, f"withoutHeaders.{plain(name)}", where, release)
        # From Istio 1.22 an absent header counts as "", so it does not match a value (route.go).
        missing_as_empty = release.minor >= 22 and matcher.kind != "present"
        headers.append(HeaderMatch(name.lower(), matcher, invert=True, missing_as_empty=missing_as_empty))
    headers.sort(key=lambda header: header.name)
    if "method" in match:
        headers.append(HeaderMatch(":method", string_match(match["method"], "method", where, release)))
    if "authority" in match:
        headers.append(HeaderMatch(":authority", string_match(match["authority"], "authority", where, release)))
    query = tuple(
        (name, string_match(spec, f"queryParams.{plain(name)}", where, release))
        for name, spec in sorted(match.get("queryParams", {}).items())
    )
    if not release.query_prefix_match:
        query = tuple((name, StringMatch("present", "") if m.kind == "prefix" else m) for name, m in query)
    uri = None
    if "uri" in match:
        if match["uri"] == {"regex": "*"}:
            raise BuildError(f"{where}: uri regex '*' is not valid RE2, so Envoy would reject it; use prefix: /")
        uri = string_match(match["uri"], "uri", where, release)
        if uri.kind == "present":
            uri = None  # every request has a path
    return Match(uri=uri, headers=tuple(headers), query=query, ignore_case=bool(match.get("ignoreUriCase")))


def default_retry(release: IstioRelease) -> Retry:
    """Istio's retry policy for a route that sets none (retry.go DefaultPolicy / cachedDefaultPolicy)."""
    return Retry(2, DEFAULT_RETRY_ON, release.default_retry_status_codes)


def retry_policy(spec: dict[str, Any] | None, where: str, release: IstioRelease = DEFAULT_RELEASE) -> Retry | None:
    """retry.go ConvertPolicy: attempts 0 disables retries; retryOn replaces the default conditions and codes."""
    default = default_retry(release)
    if spec is None:
        return default
    attempts = spec.get("attempts", 0)
    if attempts <= 0:
        return None
    per_try = seconds(spec["perTryTimeout"]) if "perTryTimeout" in spec else None
    if "retryOn" not in spec:
        return dataclasses.replace(default, attempts=attempts, per_try_timeout=per_try)
    conditions, codes = [], []
    for item in (c.strip() for c in spec["retryOn"].split(",") if c.strip()):
        if item.isdigit():
            codes.append(int(item))
        elif item in RETRY_CONDITIONS:
            conditions.append(item)
        else:
            raise BuildError(f"{where}: retryOn {plain(item)} is not an Envoy retry condition or status code")
    if codes and "retriable-status-codes" not in conditions and release.adds_retriable_status_codes:
        conditions.append("retriable-status-codes")
    return Retry(attempts, ",".join(conditions), tuple(codes), per_try)


def fault_of(spec: dict[str, Any] | None) -> Fault | None:
    if not spec:
        return None
    delay, abort = spec.get("delay"), spec.get("abort")

    # route.go TranslateFault (1.8.6 and 1.30.3): without percentage, delay uses the deprecated
    # integer percent (default 0) and abort leaves Envoy's percentage unset, which is 0%.
    def percent(part: dict[str, Any]) -> float:
        if "percentage" in part:
            return float(part["percentage"].get("value", 0.0))
        return float(part.get("percent", 0))

    return Fault(
        delay=seconds(delay["fixedDelay"]) if delay else None,
        delay_percent=percent(delay) if delay else 100.0,
        abort_status=abort["httpStatus"] if abort else None,
        abort_percent=percent(abort) if abort else 100.0,
    )


def redirect_of(spec: dict[str, Any], where: str, port: int | None) -> Redirect:
    """route.go ApplyRedirect: derivePort FROM_REQUEST_PORT is the port the route serves; :80 on http is left out."""
    code = spec.get("redirectCode") or 301
    if code not in REDIRECT_CODES:
        raise BuildError(f"{where}: redirectCode {code} is not one of {sorted(REDIRECT_CODES)}")
    if "port" in spec and "derivePort" in spec:
        raise BuildError(f"{where}: redirect takes port or derivePort, not both")
    redirect_port = spec.get("port")
    if spec.get("derivePort") == "FROM_REQUEST_PORT":
        redirect_port = port
    scheme = spec.get("scheme")
    defaults = {80: "http", 443: "https"}
    if ("port" in spec or "derivePort" in spec) and defaults.get(redirect_port or 0) == (scheme or "http"):
        redirect_port = None
    return Redirect(spec.get("uri"), spec.get("authority"), code, scheme, redirect_port)


def is_internal_header(name: str) -> bool:
    """Headers Envoy will not let a route modify (route.go isInternalHeader)."""
    return name.startswith(":") or name.lower() == "host"


def request_header_ops(spec: dict[str, Any] | None, where: str, release: IstioRelease) -> tuple[HeaderOps, str | None]:
    """Request header operations, and the authority a set/add of ':authority' or 'host' rewrites to.

    From Istio 1.10, route.go TranslateHeadersOperations turns those into a host
    rewrite ('set' wins over 'add'); 1.8.6 passes them to Envoy, which rejects them.
    """
    spec = spec or {}
    authority = None
    for verb in ("add", "set"):
        for name, value in spec.get(verb, {}).items():
            if name.lower() in (":authority", "host") and release.authority_header_rewrite:
                authority = value
            elif is_internal_header(name):
                raise BuildError(
                    f"{where}: headers.request.{verb} cannot change {plain(name)} in Istio {release.version}; "
                    + ("use rewrite.authority" if name.lower() in (":authority", "host") else "remove it")
                )
    return header_ops(spec, "headers.request", where), authority


def response_header_ops(spec: dict[str, Any] | None, where: str, release: IstioRelease) -> HeaderOps:
    for verb in ("add", "set"):
        for name in (spec or {}).get(verb, {}):
            if is_internal_header(name):
                raise BuildError(f"{where}: headers.response.{verb} cannot change {plain(name)}; remove it")
    return header_ops(spec, "headers.response", where)


def header_ops(spec: dict[str, Any] | None, field: str, where: str) -> HeaderOps:
    spec = spec or {}
    for name in spec.get("remove", []):
        if is_internal_header(name):
            raise BuildError(f"{where}: {field}.remove cannot remove {plain(name)}; remove it from the list")
    return HeaderOps(
        set=tuple(sorted((k, v) for k, v in spec.get("set", {}).items() if not is_internal_header(k))),
        add=tuple(sorted((k, v) for k, v in spec.get("add", {}).items() if not is_internal_header(k))),
        remove=tuple(spec.get("remove", [])),
    )


def unknown_host_route() -> Route:
    # The local registry is the only DNS the proxies have, so a host that is
    # neither a Service nor a ServiceEntry cannot be reached (Istio's
    # REGISTRY_ONLY answer); see the README for how this differs from ALLOW_ANY.
    reason = "host not in the mesh registry: add a ServiceEntry for it\n"
    return Route("block_all", Match(uri=StringMatch("prefix", "/")), direct=DirectResponse(502, reason))


def default_route(host: str, port: int, release: IstioRelease) -> Route:
    return Route(
        name="default",
        match=Match(uri=StringMatch("prefix", "/")),
        clusters=(WeightedCluster(cluster_name(host, port), 100),),
        retry=default_retry(release),
    )
