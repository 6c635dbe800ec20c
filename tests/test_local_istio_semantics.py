"""Istio's translation, per release, as the local backend reproduces it (pure: resources -> Envoy JSON).

Each case names the upstream file of github.com/istio/istio it follows, read at
the matrix's tags (1.8.6, 1.28.10, 1.30.3).
"""

from __future__ import annotations

import pytest

from meshy.local import envoy, topology
from meshy.local.build import BuildError, Inputs, build_mesh
from meshy.local.release import IstioRelease, release_of
from meshy.local.resources import ResourceError, ResourceSet, parse_documents
from tests.test_local_refusals import SERVICE

ISTIO_18, ISTIO_128, ISTIO_130 = release_of("1.8.6"), release_of("1.28.10"), release_of("1.30.3")
MATRIX = (ISTIO_18, ISTIO_128, ISTIO_130)

WORKLOADS = (
    SERVICE
    + """---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*.example.org']}]
"""
)


def mesh_of(text: str, release: IstioRelease = ISTIO_130):
    resources = ResourceSet().applied(parse_documents(WORKLOADS + "---\n" + text, "test.yaml", release))
    layout = topology.Layout()
    pods, _ = topology.pods(resources, {}, layout)
    return build_mesh(Inputs(resources, pods, topology.gateways(layout), {}, release))


def virtual_service(http: str, name: str = "web-vs", hosts: str = "[web]", gateways: str = "[mesh]") -> str:
    return (
        f"apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: {name}}}\n"
        f"spec:\n  hosts: {hosts}\n  gateways: {gateways}\n  http:\n{http}\n"
    )


def sidecar_routes(mesh) -> list[dict]:
    proxy = next(p for name, p in mesh.proxies.items() if name.startswith("web-"))
    outbound = next(item for item in proxy.listeners if item.name == "outbound")
    vhost = next(vh for vh in outbound.virtual_hosts if vh.name.startswith("web.default"))
    return envoy.virtual_host(vhost)["routes"]


def gateway_routes(mesh, host: str) -> list[dict]:
    listener = mesh.proxies["istio-ingressgateway"].listeners[0]
    vhost = next(vh for vh in listener.virtual_hosts if vh.domains == (host,))
    return envoy.virtual_host(vhost)["routes"]


ROUTE = "      route: [{destination: {host: web}}]"


# --- route.go TranslateFault: no percentage, no fault --------------------------------


@pytest.mark.parametrize("release", MATRIX, ids=lambda r: r.version)
def test_fault_without_percentage_injects_nothing(release):
    http = "    - fault: {abort: {httpStatus: 503}, delay: {fixedDelay: 2s}}\n" + ROUTE
    (route,) = sidecar_routes(mesh_of(virtual_service(http), release))
    fault = route["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["abort"]["percentage"]["numerator"] == 0
    assert fault["delay"]["percentage"]["numerator"] == 0


def test_fault_with_percentage_keeps_it():
    http = "    - fault: {abort: {httpStatus: 503, percentage: {value: 12.5}}}\n" + ROUTE
    (route,) = sidecar_routes(mesh_of(virtual_service(http)))
    assert route["typed_per_filter_config"]["envoy.filters.http.fault"]["abort"]["percentage"] == {
        "numerator": 125000,
        "denominator": "MILLION",
    }


# --- cluster.go / cluster_traffic_policy.go applyOutlierDetection ------------------------


def outlier_cluster(detection: str, release: IstioRelease = ISTIO_130) -> dict:
    rule = (
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: web}\n"
        f"spec:\n  host: web\n  trafficPolicy:\n    outlierDetection: {detection}\n"
    )
    proxy = next(p for name, p in mesh_of(rule, release).proxies.items() if name.startswith("web-"))
    cluster = next(c for c in proxy.clusters if c.name == "outbound|9090||web.default.svc.cluster.local")
    return envoy.cluster(cluster)


@pytest.mark.parametrize("release", MATRIX, ids=lambda r: r.version)
def test_outlier_detection_turns_panic_routing_off(release):
    cluster = outlier_cluster("{consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s}", release)
    assert cluster["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}
    assert cluster["outlier_detection"]["consecutive_5xx"] == 1
    assert cluster["outlier_detection"]["enforcing_consecutive_5xx"] == 100
    assert cluster["outlier_detection"]["enforcing_success_rate"] == 0


def test_deprecated_consecutive_errors_is_not_translated():
    cluster = outlier_cluster("{consecutiveErrors: 1}")
    # Envoy's default (5 consecutive 5xx) applies, as in Istio.
    assert "consecutive_5xx" not in cluster["outlier_detection"]


def test_consecutive_errors_is_named_as_without_effect():
    from meshy.local.shapes import without_effect

    rule = parse_documents(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\n"
        "spec: {host: web, trafficPolicy: {outlierDetection: {consecutiveErrors: 2}}}",
        "x",
    )[0]
    (note,) = without_effect(rule.spec)
    assert note.startswith("spec.trafficPolicy.outlierDetection.consecutiveErrors has no local effect")


# --- gateway.go CombineVHostRoutes / SortVHostRoutes; route.go catch-all truncation --------


@pytest.mark.parametrize("release", MATRIX, ids=lambda r: r.version)
def test_gateway_catch_all_of_an_older_virtual_service_goes_last(release):
    older = virtual_service(ROUTE.replace("      ", "    - ", 1), "a-old", "[site.example.org]", "[gw]")
    newer = virtual_service("    - match: [{uri: {prefix: /b}}]\n" + ROUTE, "b-new", "[site.example.org]", "[gw]")
    routes = gateway_routes(mesh_of(older + "---\n" + newer, release), "site.example.org")
    assert [r["match"] for r in routes] == [{"prefix": "/b"}, {"prefix": "/"}]


def test_routes_after_a_catch_all_are_dropped():
    http = "    - match: [{uri: {prefix: /}}]\n" + ROUTE + "\n    - match: [{uri: {prefix: /x}}]\n" + ROUTE
    assert [r["match"] for r in sidecar_routes(mesh_of(virtual_service(http)))] == [{"prefix": "/"}]


def test_a_catch_all_regex_follows_the_release():
    other = virtual_service("    - match: [{uri: {prefix: /b}}]\n" + ROUTE, "b", "[site.example.org]", "[gw]")
    regex_all = virtual_service("    - match: [{uri: {regex: '.*'}}]\n" + ROUTE, "a", "[site.example.org]", "[gw]")
    routes = gateway_routes(mesh_of(regex_all + "---\n" + other, ISTIO_130), "site.example.org")
    assert routes[-1]["match"] == {"safe_regex": {"regex": ".*"}}
    routes = gateway_routes(mesh_of(regex_all + "---\n" + other, ISTIO_18), "site.example.org")
    assert routes[0]["match"] == {"safe_regex": {"regex": ".*"}}  # 1.8.6 only knew "*"


# --- route.go TranslateHeadersOperations: ':authority' is a host rewrite ------------------


@pytest.mark.parametrize("release", [ISTIO_128, ISTIO_130], ids=lambda r: r.version)
def test_authority_header_set_is_a_host_rewrite(release):
    http = "    - headers: {request: {set: {':authority': new.example.org, x-a: b}}}\n" + ROUTE
    (route,) = sidecar_routes(mesh_of(virtual_service(http), release))
    assert route["route"]["host_rewrite_literal"] == "new.example.org"
    assert [h["header"]["key"] for h in route["request_headers_to_add"]] == ["x-a"]


def test_the_authority_may_be_set_in_one_place_only():
    http = "    - rewrite: {authority: r.example.org}\n      headers: {request: {add: {host: h.example.org}}}\n"
    with pytest.raises(BuildError, match="the authority is set more than once"):
        mesh_of(virtual_service(http + ROUTE))


@pytest.mark.parametrize(
    ("http", "message"),
    [
        ("    - redirect: {uri: /x}\n      fault: {abort: {httpStatus: 500}}", "fault and redirect cannot be set"),
        ("    - directResponse: {status: 200}\n      rewrite: {uri: /x}", "rewrite and directResponse cannot"),
        ("    - mirror: {host: web}\n      mirrors: [{destination: {host: web}}]\n" + ROUTE, "mirror and mirrors"),
        ("    - match: [{headers: {x-a: {prefix: ''}}}]\n" + ROUTE, "headers.x-a.prefix must not be empty"),
        ("    - match: [{uri: {regex: ''}}]\n" + ROUTE, "uri.regex must not be empty"),
    ],
)
def test_combinations_istio_validation_refuses(http, message):
    with pytest.raises(BuildError, match=message):
        mesh_of(virtual_service(http))


def test_authority_header_is_refused_by_istio_18():
    http = "    - headers: {request: {set: {':authority': new.example.org}}}\n" + ROUTE
    with pytest.raises(BuildError, match="cannot change :authority in Istio 1.8; use rewrite.authority"):
        mesh_of(virtual_service(http), ISTIO_18)


@pytest.mark.parametrize("field", ["response: {set: {':status': '200'}}", "request: {remove: [host]}"])
def test_pseudo_headers_cannot_be_changed(field):
    with pytest.raises(BuildError, match="cannot (change|remove)"):
        mesh_of(virtual_service(f"    - headers: {{{field}}}\n" + ROUTE))


# --- route.go translateHeaderMatch: an empty match is a presence match --------------------


@pytest.mark.parametrize("release", MATRIX, ids=lambda r: r.version)
def test_empty_header_match_is_a_presence_match(release):
    http = "    - match: [{headers: {x-canary: {}, x-any: {regex: '*'}}}]\n" + ROUTE
    (route, *_) = sidecar_routes(mesh_of(virtual_service(http), release))
    assert route["match"]["headers"] == [
        {"name": "x-any", "present_match": True},
        {"name": "x-canary", "present_match": True},
    ]


def test_a_string_match_with_two_kinds_is_refused():
    http = "    - match: [{headers: {x-a: {exact: a, prefix: b}}}]\n" + ROUTE
    with pytest.raises(BuildError, match="headers.x-a takes one of exact, prefix, regex, not 2 of them"):
        mesh_of(virtual_service(http))


# --- validation.go validateHTTPRouteDestinations: weights per release ---------------------

SPLIT = (
    "    - route:\n        - {destination: {host: web}, weight: 60}\n        - {destination: {host: web}, weight: 30}"
)


def test_weights_must_total_100_in_istio_18():
    with pytest.raises(BuildError, match="add up to 90; Istio 1.8 needs a total of 100"):
        mesh_of(virtual_service(SPLIT), ISTIO_18)


@pytest.mark.parametrize("release", [ISTIO_128, ISTIO_130], ids=lambda r: r.version)
def test_weights_are_relative_from_istio_115(release):
    (route,) = sidecar_routes(mesh_of(virtual_service(SPLIT), release))
    assert [c["weight"] for c in route["route"]["weighted_clusters"]["clusters"]] == [60, 30]


def test_an_unset_weight_is_zero_and_a_zero_total_is_refused():
    unset = SPLIT.replace(", weight: 30", "")
    (route,) = sidecar_routes(mesh_of(virtual_service(unset)))
    assert route["route"]["cluster"] == "outbound|9090||web.default.svc.cluster.local"
    with pytest.raises(BuildError, match="add up to 0"):
        mesh_of(virtual_service(unset.replace(", weight: 60", "")))


# --- proxy headers: server name and attempt count ---------------------------------------


def test_server_header_and_attempt_count_as_istio_sets_them():
    mesh = mesh_of("")
    sidecar = next(p for name, p in mesh.proxies.items() if name.startswith("web-"))
    by_name = {item.name: envoy.listener(item, envoy.Path("/x")) for item in sidecar.listeners}

    def server_name(listener: dict) -> str | None:
        return listener["filter_chains"][0]["filters"][0]["typed_config"].get("server_name")

    assert server_name(by_name["inbound_9090"]) == "istio-envoy"
    assert server_name(by_name["outbound"]) is None  # Envoy's own "envoy", as Istio leaves it
    gateway = mesh.proxies["istio-ingressgateway"].listeners[0]
    assert server_name(envoy.listener(gateway, envoy.Path("/x"))) == "istio-envoy"
    outbound = next(item for item in sidecar.listeners if item.name == "outbound")
    assert all(envoy.virtual_host(vh)["include_request_attempt_count"] for vh in outbound.virtual_hosts)


# --- API versions and registry ---------------------------------------------------------------


def test_istio_18_serves_no_v1_api():
    text = virtual_service("    - route: [{destination: {host: web}}]").replace("v1beta1", "v1")
    with pytest.raises(ResourceError, match="not served by Istio 1.8 \\(served: networking.istio.io/v1alpha3, "):
        mesh_of(text, ISTIO_18)
    assert mesh_of(text, ISTIO_130).proxies


def test_a_service_entry_cannot_take_a_services_host():
    entry = (
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: se}\n"
        "spec: {hosts: [web.default.svc.cluster.local], ports: [{number: 9090, name: http}], resolution: DNS}"
    )
    with pytest.raises(BuildError, match="is Service web's; a ServiceEntry cannot take it over"):
        mesh_of(entry)


# --- retry.go ConvertPolicy: consistent hashing keeps retries on the same host from 1.23 ------


@pytest.mark.parametrize(("release", "predicate"), [(ISTIO_18, True), (ISTIO_128, False), (ISTIO_130, False)])
def test_consistent_hash_drops_the_previous_hosts_predicate_from_istio_123(release, predicate):
    rule = (
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: web}\n"
        "spec: {host: web, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}}\n---\n"
    )
    (route,) = sidecar_routes(mesh_of(rule + virtual_service("    - " + ROUTE.strip()), release))
    assert route["route"]["hash_policy"] == [{"header": {"header_name": "x-user"}}]
    assert ("retry_host_predicate" in route["route"]["retry_policy"]) is predicate


def test_port_level_settings_replace_the_rules_parts_without_inheriting():
    rule = (
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: web}\n"
        "spec:\n  host: web\n  trafficPolicy:\n    loadBalancer: {simple: RANDOM}\n"
        "    connectionPool: {tcp: {maxConnections: 5}}\n"
        "    portLevelSettings: [{port: {number: 9090}, loadBalancer: {simple: ROUND_ROBIN}}]\n"
    )
    proxy = next(p for name, p in mesh_of(rule).proxies.items() if name.startswith("web-"))
    cluster = envoy.cluster(next(c for c in proxy.clusters if c.name == "outbound|9090||web.default.svc.cluster.local"))
    assert cluster["lb_policy"] == "ROUND_ROBIN"
    assert cluster["circuit_breakers"]["thresholds"][0]["max_connections"] == envoy.UNLIMITED


@pytest.mark.parametrize(("release", "suffix"), [(ISTIO_18, True), (ISTIO_128, False), (ISTIO_130, False)])
def test_mirrored_host_gets_the_shadow_suffix_before_istio_128(release, suffix):
    (route,) = sidecar_routes(mesh_of(virtual_service("    - mirror: {host: web}\n" + ROUTE), release))
    (policy,) = route["route"]["request_mirror_policies"]
    assert policy.get("disable_shadow_host_suffix_append", False) is not suffix


def test_a_regex_is_held_to_the_releases_re2_program_limit():
    # /a{1,300}b compiles to about 600 RE2 instructions: over Envoy's own 100, within Istio's 1024 and 32768.
    http = "    - match: [{uri: {regex: '/a{1,300}b'}}]\n" + ROUTE
    for release in MATRIX:
        assert mesh_of(virtual_service(http), release).proxies
    huge = "    - match: [{headers: {x-a: {regex: '[a-z]{1,900}'}}}]\n" + ROUTE
    with pytest.raises(BuildError, match="headers.x-a.regex compiles to more than Istio 1.8's RE2 limit of 1024"):
        mesh_of(virtual_service(huge), ISTIO_18)
    assert mesh_of(virtual_service(huge), ISTIO_130).proxies


def test_a_regex_re2_refuses_is_refused_by_name():
    with pytest.raises(ResourceError, match="uri.regex is not a regular expression RE2"):
        mesh_of(virtual_service("    - match: [{uri: {regex: 'a++'}}]\n" + ROUTE))


def test_per_route_configs_of_several_filters_sit_side_by_side():
    http = "    - fault: {abort: {httpStatus: 503, percentage: {value: 5}}}\n      corsPolicy: {allowMethods: [GET]}\n"
    (route,) = sidecar_routes(mesh_of(virtual_service(http + ROUTE)))
    assert list(route["typed_per_filter_config"]) == ["envoy.filters.http.cors", "envoy.filters.http.fault"]
    proxy = next(p for name, p in mesh_of("").proxies.items() if name.startswith("web-"))
    chain = envoy.listener(proxy.listeners[0], envoy.Path("/x"))["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in chain["http_filters"]][-1] == "envoy.filters.http.router"


# --- retry.go: the default policy and retryOn per release ------------------------------------


@pytest.mark.parametrize(("release", "codes"), [(ISTIO_18, [503]), (ISTIO_128, None), (ISTIO_130, None)])
def test_default_retries_cover_503_responses_up_to_istio_126(release, codes):
    (route,) = sidecar_routes(mesh_of(virtual_service("    - " + ROUTE.strip()), release))
    assert route["route"]["retry_policy"].get("retriable_status_codes") == codes
    assert route["route"]["retry_policy"]["num_retries"] == 2


@pytest.mark.parametrize(("release", "added"), [(ISTIO_18, False), (ISTIO_130, True)])
def test_status_codes_in_retry_on_need_their_condition_before_istio_112(release, added):
    http = "    - retries: {attempts: 3, retryOn: 'connect-failure,502'}\n" + ROUTE
    (route,) = sidecar_routes(mesh_of(virtual_service(http), release))
    policy = route["route"]["retry_policy"]
    assert policy["retriable_status_codes"] == [502]
    assert ("retriable-status-codes" in policy["retry_on"]) is added
