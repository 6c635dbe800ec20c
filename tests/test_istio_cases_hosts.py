"""Host cases of Istio's webhook tests (Gateway servers, VirtualService hosts) on the local backend.

Upstream: github.com/istio/istio pkg/config/validation/validation_test.go TestValidateServer and
TestValidateVirtualService at 1.30.3, with the rules of pkg/config/validation/agent/validation.go
(ValidateWildcardDomain, validateSidecarOrGatewayHostnamePart; the same rules in validation.go at 1.8.6).
"""

from __future__ import annotations

import pytest

from meshy.local.build import BuildError
from meshy.local.resources import ResourceError
from tests.test_istio_cases_validation import assert_verdict
from tests.test_local_istio_semantics import ISTIO_18, ISTIO_130, mesh_of, virtual_service


def refusal(text: str, release=ISTIO_130) -> str | None:
    try:
        mesh_of(text, release)
    except (BuildError, ResourceError) as error:
        return str(error)
    return None


def gateway(hosts: str) -> str:
    return (
        "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: gw2}\nspec:\n"
        "  selector: {istio: ingressgateway}\n"
        f"  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: {hosts}}}]\n"
    )


SERVER_CASES = [
    ("happy", "[foo.bar.com]", True),
    ("happy ip", "['1.1.1.1']", True),
    ("happy ns/name", "[ns1/foo.bar.com]", True),
    ("happy */name", "['*/foo.bar.com']", True),
    ("happy ./name", "[./foo.bar.com]", True),
    ("invalid ~/name", "['~/foo.bar.com']", False),
    ("invalid domain ns/name format", "['ns1/foo.*.bar.com']", False),
    ("invalid domain", "['foo.*.bar.com']", False),
    ("invalid short name host", "[foo]", False),
    ("invalid short name after ns/", "[ns1/foo]", False),
    ("uppercase label (DNS-1123)", "[FOO.bar.com]", False),
    ("underscore label (DNS-1123)", "[foo_bar.example.org]", False),
    ("all-numeric top-level label", "[foo.123]", False),
    ("empty host list", "[]", False),
]


@pytest.mark.parametrize(("case", "hosts", "accepted"), SERVER_CASES, ids=[c[0] for c in SERVER_CASES])
@pytest.mark.parametrize("release", [ISTIO_18, ISTIO_130], ids=["1.8", "1.30"])
def test_server_hosts(case, hosts, accepted, release):
    assert_verdict(f"TestValidateServer/{case}", refusal(gateway(hosts), release), accepted, "gw2")


ROUTE = "    - route: [{destination: {host: web}}]"
VS_CASES = [
    ("wildcard covering a name", "[a.example.org, '*.example.org']", False),
    ("wildcard covering a wildcard", "['*.example.org', '*.org']", False),
    ("literal duplicate", "[a.example.org, a.example.org]", False),
    ("distinct names", "[a.example.org, b.example.org]", True),
    ("uppercase host", "[A.example.org]", False),
    ("ip host on a gateway", "['1.1.1.1']", True),
]


@pytest.mark.parametrize(("case", "hosts", "accepted"), VS_CASES, ids=[c[0] for c in VS_CASES])
def test_virtual_service_hosts(case, hosts, accepted):
    assert_verdict(case, refusal(virtual_service(ROUTE, hosts=hosts, gateways="[gw]")), accepted, "web-vs")


def test_virtual_service_without_routes_is_refused():
    # validateVirtualService: "http, tcp or tls must be provided" (1.8.6 and 1.30.3).
    text = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: empty}\nspec:\n  hosts: [web]\n"
    for release in (ISTIO_18, ISTIO_130):
        assert "at least one route" in refusal(text, release)


def test_mesh_wildcard_star_is_refused():
    # validateVirtualService: '*' is not allowed for a VirtualService bound to the mesh gateway.
    assert refusal(virtual_service(ROUTE, hosts="['*']", gateways="[mesh]")) is not None
