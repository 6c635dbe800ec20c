"""Cases of Istio's route translation tests, reproduced on the local backend's Envoy configuration.

Upstream: github.com/istio/istio pilot/pkg/networking/core/route/route_test.go (TestBuildHTTPRoutes) at
1.30.3 (pilot/pkg/networking/core/v1alpha3/route/route_test.go at 1.8.6); each test names the t.Run case.
Our own VirtualServices; the expectations are the properties Istio's case checks in the generated routes.
"""

from __future__ import annotations

import pytest

from tests.test_local_istio_semantics import (
    ISTIO_18,
    MATRIX,
    ROUTE,
    gateway_routes,
    mesh_of,
    sidecar_routes,
    virtual_service,
)

SITE = "site.example.org"


def at_gateway(http: str, release=MATRIX[-1]) -> list[dict]:
    return gateway_routes(mesh_of(virtual_service(http, hosts=f"[{SITE}]", gateways="[gw]"), release), SITE)


@pytest.mark.parametrize("release", MATRIX, ids=lambda r: r.version)
def test_catch_all_match_after_a_specific_one_in_one_entry(release):
    # "for virtual service with catch all route": both matches of the entry stay, specific first.
    http = "    - match: [{uri: {prefix: /route/v1}}, {uri: {prefix: /}}]\n" + ROUTE
    assert [r["match"] for r in at_gateway(http, release)] == [{"prefix": "/route/v1"}, {"prefix": "/"}]


def test_a_port_only_match_is_a_catch_all_on_that_port():
    # "for virtual service with catch all route：port match": a match naming only the listener's port
    # catches everything there, so the entries after it are dropped.
    http = "    - match: [{port: 80}]\n" + ROUTE + "\n    - match: [{headers: {cookie: {exact: canary}}}]\n" + ROUTE
    routes = at_gateway(http)
    assert len(routes) == 1 and routes[0]["match"] == {"prefix": "/"}


def test_a_port_match_for_another_port_leaves_the_entry_out():
    http = "    - match: [{port: 8443}]\n" + ROUTE + "\n    - match: [{headers: {cookie: {exact: canary}}}]\n" + ROUTE
    (route,) = at_gateway(http)
    assert route["match"]["headers"][0]["name"] == "cookie"


def test_top_level_catch_all_keeps_one_route():
    # "for virtual service with top level catch all route": an entry without match ends the list.
    http = ROUTE.replace("      ", "    - ", 1) + "\n    - match: [{uri: {prefix: /x}}]\n" + ROUTE
    assert len(at_gateway(http)) == 1


@pytest.mark.parametrize("release", MATRIX, ids=lambda r: r.version)
def test_redirect_code_and_response_header(release):
    # "for redirect code" and "for redirect and header manipulation": 308 is PERMANENT_REDIRECT and the
    # entry's response headers are set (overwriting) on the redirect route itself.
    http = (
        "    - redirect: {uri: /moved, authority: other.example.org, redirectCode: 308}\n"
        "      headers: {response: {set: {strict-transport-security: max-age=31536000}}}"
    )
    (route,) = at_gateway(http, release)
    assert route["redirect"]["response_code"] == "PERMANENT_REDIRECT"
    assert route["redirect"]["host_redirect"] == "other.example.org"
    assert route["response_headers_to_add"] == [
        {
            "header": {"key": "strict-transport-security", "value": "max-age=31536000"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]


def test_direct_response_with_header():
    # "for direct response code and header manipulation".
    http = "    - directResponse: {status: 200, body: {string: hello}}\n      headers: {response: {set: {x-a: b}}}"
    (route,) = at_gateway(http)
    assert route["direct_response"] == {"status": 200, "body": {"inline_string": "hello"}}
    assert [h["header"]["key"] for h in route["response_headers_to_add"]] == ["x-a"]


@pytest.mark.parametrize("release", MATRIX, ids=lambda r: r.version)
def test_host_and_prefix_rewrite(release):
    # "for host rewrite", "for prefix path rewrite", "for path and host rewrite" (uri rewrite of a prefix).
    http = "    - match: [{uri: {prefix: /old}}]\n      rewrite: {uri: /new, authority: bar.example.org}\n" + ROUTE
    (route,) = sidecar_routes(mesh_of(virtual_service(http), release))
    assert route["route"]["prefix_rewrite"] == "/new"
    assert route["route"]["host_rewrite_literal"] == "bar.example.org"


def test_weighted_destinations_carry_their_own_headers():
    # "for header operations for weighted cluster": each destination's request/response operations sit
    # on its weighted cluster, the entry's own on the route.
    http = (
        "    - headers: {request: {set: {x-route: r}}}\n"
        "      route:\n"
        "      - {destination: {host: web}, weight: 70, headers: {request: {set: {x-dest: a}}}}\n"
        "      - {destination: {host: web, port: {number: 9090}}, weight: 30, headers: {response: {add: {x-back: b}}}}"
    )
    (route,) = sidecar_routes(mesh_of(virtual_service(http)))
    first, second = route["route"]["weighted_clusters"]["clusters"]
    assert [h["header"]["key"] for h in route["request_headers_to_add"]] == ["x-route"]
    assert [h["header"]["key"] for h in first["request_headers_to_add"]] == ["x-dest"]
    assert [h["header"]["key"] for h in second["response_headers_to_add"]] == ["x-back"]
    assert (first["weight"], second["weight"]) == (70, 30)


def test_no_timeout_unless_set(release=ISTIO_18):
    # "for virtual service" (default timeout 0, which Envoy reads as none) and "with timeout".
    (plain,) = sidecar_routes(mesh_of(virtual_service(ROUTE.replace("      ", "    - ", 1)), release))
    assert plain["route"]["timeout"] == "0s"
    (timed,) = sidecar_routes(mesh_of(virtual_service("    - timeout: 10s\n" + ROUTE), release))
    assert timed["route"]["timeout"] == "10s"


# --- cluster_test.go TestApplyOutlierDetection (1.30.3; cluster.go applyOutlierDetection at 1.8.6 alike) --


def outbound_cluster(policy: str, release) -> dict:
    from meshy.local import envoy

    text = f"apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: d}}\nspec:\n  host: web\n  trafficPolicy: {policy}\n"
    proxy = next(p for name, p in mesh_of(text, release).proxies.items() if name.startswith("web-"))
    found = [envoy.cluster(c) for c in proxy.clusters]
    return next(c for c in found if c["name"] == "outbound|9090||web.default.svc.cluster.local")


@pytest.mark.parametrize("release", MATRIX, ids=lambda r: r.version)
@pytest.mark.parametrize(
    ("case", "policy", "expected"),
    [
        ("No outlier detection is set", "{}", {"enforcing_success_rate": 0}),
        (
            "Consecutive gateway and 5xx errors are set",
            "{consecutive5xxErrors: 4, consecutiveGatewayErrors: 3}",
            {
                "enforcing_success_rate": 0,
                "consecutive_5xx": 4,
                "enforcing_consecutive_5xx": 100,
                "consecutive_gateway_failure": 3,
                "enforcing_consecutive_gateway_failure": 100,
            },
        ),
        (
            "Only consecutive gateway is set",
            "{consecutiveGatewayErrors: 3}",
            {
                "enforcing_success_rate": 0,
                "consecutive_gateway_failure": 3,
                "enforcing_consecutive_gateway_failure": 100,
            },
        ),
        # applyOutlierDetection passes maxEjectionPercent on only above 0, so 0 leaves Envoy's 10%.
        ("maxEjectionPercent 0 is left unset", "{maxEjectionPercent: 0}", {"enforcing_success_rate": 0}),
        (
            "maxEjectionPercent 100",
            "{maxEjectionPercent: 100}",
            {"enforcing_success_rate": 0, "max_ejection_percent": 100},
        ),
        (
            "Consecutive 5xx is set to 0",
            "{consecutive5xxErrors: 0}",
            {"enforcing_success_rate": 0, "consecutive_5xx": 0, "enforcing_consecutive_5xx": 0},
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and v[0].isupper() else None,
)
def test_outlier_detection_translation(case, policy, expected, release):
    cluster = outbound_cluster(f"{{outlierDetection: {policy}}}", release)
    assert cluster["outlier_detection"] == expected, case
    # applyOutlierDetection turns panic routing off whenever outlier detection is set.
    assert cluster["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}


@pytest.mark.parametrize("release", MATRIX, ids=lambda r: r.version)
def test_zero_connection_pool_limits_mean_unset(release):
    # cluster_traffic_policy.go applyConnectionPool (1.30.3; cluster.go at 1.8.6): a limit is passed on
    # only above 0, so zeros keep Istio's unlimited circuit breakers instead of blocking every request.
    zeros = "{tcp: {maxConnections: 0}, http: {http1MaxPendingRequests: 0, http2MaxRequests: 0, maxRetries: 0}}"
    (threshold,) = outbound_cluster(f"{{connectionPool: {zeros}}}", release)["circuit_breakers"]["thresholds"]
    assert set(threshold.values()) == {2**32 - 1}
    (threshold,) = outbound_cluster("{connectionPool: {http: {http2MaxRequests: 7}}}", release)["circuit_breakers"][
        "thresholds"
    ]
    assert threshold["max_requests"] == 7


# --- gateway.go buildGatewayHTTPRouteConfig: virtual hosts are host.Names.Intersection(server, vs) ----


def gateway_domains(vs_hosts: str, release) -> list[tuple[str, ...]]:
    mesh = mesh_of(virtual_service(ROUTE.replace("      ", "    - ", 1), hosts=vs_hosts, gateways="[gw]"), release)
    (listener,) = mesh.proxies["istio-ingressgateway"].listeners
    return [vh.domains for vh in listener.virtual_hosts]


@pytest.mark.parametrize("release", MATRIX, ids=lambda r: r.version)
@pytest.mark.parametrize(
    ("vs_hosts", "domains"),
    [
        ("[a.example.org]", [("a.example.org",)]),  # the narrower VirtualService host
        ("['*.a.example.org']", [("*.a.example.org",)]),
        ("['*']", [("*.example.org",)]),  # the narrower server host '*.example.org'
        ("['*.org']", [("*.example.org",)]),
        ("[other.org]", []),  # no intersection: no virtual host
    ],
)
def test_gateway_virtual_host_is_the_intersection(vs_hosts, domains, release):
    assert gateway_domains(vs_hosts, release) == domains


@pytest.mark.parametrize(
    ("release", "expected"),
    [(MATRIX[0], {"present_match": True}), (MATRIX[1], {"string_match": {"prefix": "ab"}})],
    ids=lambda v: v.version if hasattr(v, "version") else None,
)
def test_query_parameter_prefix_follows_the_release(release, expected):
    # route_test.go "for virtual service with prefix matching on query parameter" (1.30.3); at 1.8.6
    # translateQueryParamMatch has no prefix case, and Envoy reads the unset matcher as presence.
    (route,) = sidecar_routes(
        mesh_of(virtual_service("    - match: [{queryParams: {q: {prefix: ab}}}]\n" + ROUTE), release)
    )
    assert route["match"]["query_parameters"] == [{"name": "q", **expected}]
