"""Rules of Istio's validating webhook that a field's shape cannot say alone (pkg/config/validation/validation.go).

Each rule was read at the matrix's tags (1.8.6, 1.28.10, 1.30.3); the local backend refuses what the
webhook of the mesh's release refuses, so a manifest that applies locally also applies to the cluster.
"""

from __future__ import annotations

from typing import Any

from meshy.local.release import IstioRelease
from meshy.local.resources import BuildError
from meshy.local.shapes import plain, seconds

# validateCORSHTTPMethod / validateHTTPMethod: the methods Go's net/http names; "*" from Istio 1.26.
CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE")

# validateHTTPRetry accepts a numeric retryOn entry only when Go's http.StatusText knows the code
# (net/http/status.go); an unknown code such as 600 or 299 is refused.
KNOWN_STATUS_CODES = frozenset(
    [100, 101, 102, 103, *range(200, 209), 226, *range(300, 306), 307, 308, *range(400, 419)]
    + [421, 422, 423, 424, 425, 426, 428, 429, 431, 451, *range(500, 509), 510, 511]
)


def check_http_webhook(http: dict[str, Any], where: str, release: IstioRelease) -> None:
    """Refuse an http entry the release's webhook refuses, in one line naming the field."""
    check_cors(http.get("corsPolicy"), where, release)
    check_retries(http.get("retries"), where)
    check_rewrite(http.get("rewrite"), where)
    check_redirect(http.get("redirect"), where)
    for place, headers in [("headers", http.get("headers"))] + [
        (f"route[{i}].headers", d.get("headers")) for i, d in enumerate(http.get("route") or [])
    ]:
        check_header_count(headers, f"{where} {place}")


def check_cors(cors: dict[str, Any] | None, where: str, release: IstioRelease) -> None:
    if not cors:
        return
    methods = CORS_METHODS + (("*",) if release.minor >= 26 else ())
    for method in cors.get("allowMethods", []):
        if method not in methods:
            raise BuildError(
                f"{where}: corsPolicy.allowMethods {plain(method)} is not one of {', '.join(methods)} (Istio {release.version})"
            )
    for origin in cors.get("allowOrigins", []):
        if not any(origin.get(kind) for kind in ("exact", "prefix", "regex")):
            raise BuildError(f"{where}: corsPolicy.allowOrigins needs a non-empty exact, prefix or regex")
    # The webhook keeps maxAge to whole seconds (Envoy's max_age header carries seconds).
    if "maxAge" in cors and seconds(cors["maxAge"]) % 1:
        raise BuildError(f"{where}: corsPolicy.maxAge must be whole seconds, not {plain(cors['maxAge'])}")


def check_retries(retries: dict[str, Any] | None, where: str) -> None:
    if retries is None:
        return
    if not retries.get("attempts") and ("perTryTimeout" in retries or "retryOn" in retries):
        raise BuildError(f"{where}: retries with attempts 0 (retries off) cannot set perTryTimeout or retryOn")
    for item in str(retries.get("retryOn", "")).split(","):
        if item.strip().isdigit() and int(item) not in KNOWN_STATUS_CODES:
            raise BuildError(f"{where}: retryOn {plain(item.strip())} is not a known HTTP status code")


def check_rewrite(rewrite: dict[str, Any] | None, where: str) -> None:
    if rewrite is not None and not rewrite.get("uri") and not rewrite.get("authority"):
        raise BuildError(f"{where}: rewrite needs uri or authority (an empty rewrite is refused by Istio)")


def check_redirect(redirect: dict[str, Any] | None, where: str) -> None:
    # validateHTTPRedirect: a code other than 0 (unset, 301) must be 3xx.
    code = (redirect or {}).get("redirectCode", 0)
    if code and not 300 <= code <= 399:
        raise BuildError(f"{where}: redirect.redirectCode must be 0 (unset: 301) or from 300 to 399, not {code}")
    if redirect is not None and not any(redirect.get(k) for k in ("uri", "authority", "scheme", "port", "derivePort")):
        raise BuildError(f"{where}: redirect needs uri, authority, scheme or port")


def check_empty_policies(rule_key: str, spec: dict[str, Any]) -> None:
    """validateTrafficPolicy, validatePortTrafficPolicies, validateConnectionPool (1.8.6 and 1.30.3):
    a trafficPolicy, a port-level entry or a connectionPool written without any setting is refused."""
    policies = [("spec.trafficPolicy", spec.get("trafficPolicy"))]
    policies += [
        (f"spec.subsets[{i}].trafficPolicy", s.get("trafficPolicy")) for i, s in enumerate(spec.get("subsets") or [])
    ]
    for path, policy in list(policies):
        levels = (policy or {}).get("portLevelSettings") or []
        policies += [
            (f"{path}.portLevelSettings[{i}]", {k: v for k, v in p.items() if k != "port"})
            for i, p in enumerate(levels)
        ]
    for path, policy in policies:
        if policy is None:
            continue
        if not any(value is not None for value in policy.values()):
            raise BuildError(f"{rule_key}: {path} needs at least one setting (Istio refuses an empty one); remove it")
        pool = policy.get("connectionPool")
        if pool is not None and pool.get("tcp") is None and pool.get("http") is None:
            raise BuildError(
                f"{rule_key}: {path}.connectionPool needs tcp or http settings (Istio refuses an empty one)"
            )


def check_virtual_service_spec(vs_key: str, spec: dict[str, Any]) -> None:
    """validateVirtualService (1.8.6 and 1.30.3): some route list is required, and no host may cover another."""
    if not any(spec.get(kind) for kind in ("http", "tcp", "tls")):
        raise BuildError(f"{vs_key}: spec.http is empty; a VirtualService needs at least one route")
    hosts = spec.get("hosts") or []
    for i, first in enumerate(hosts):
        for second in hosts[i + 1 :]:
            if hosts_overlap(first, second):
                raise BuildError(f"{vs_key}: spec.hosts {plain(first)} and {plain(second)} overlap; keep one")


def hosts_overlap(first: str, second: str) -> bool:
    """Istio's host.Name.Matches: equal names, or a wildcard ('*.a.org', '*') covering the other name."""

    def suffix(name: str) -> str | None:
        return name[1:] if name.startswith("*") else None

    a, b = suffix(first), suffix(second)
    if a is None and b is None:
        return first == second
    if a is not None and b is not None:
        return a.endswith(b) or b.endswith(a)
    wildcard, name = (a, second) if a is not None else (b, first)
    return name.endswith(wildcard)


# Envoy refuses a route or weighted cluster adding more than 1000 headers in one direction (the wheel's
# `envoy --mode validate`: "RequestHeadersToAdd: value must contain no more than 1000 item(s)").
HEADERS_TO_ADD = 1000


def check_header_count(headers: dict[str, Any] | None, where: str) -> None:
    for direction in ("request", "response"):
        ops = (headers or {}).get(direction) or {}
        count = len(ops.get("set") or {}) + len(ops.get("add") or {})
        if count > HEADERS_TO_ADD:
            raise BuildError(f"{where}.{direction} sets or adds {count} headers; Envoy takes at most {HEADERS_TO_ADD}")
