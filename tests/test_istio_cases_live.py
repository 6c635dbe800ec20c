"""Traffic cases of Istio's integration tests, run on the local backend's real Envoy proxies.

Upstream: github.com/istio/istio tests/integration/pilot/common/routing.go (trafficCases) at 1.30.3; each
test names the TrafficTestCase it follows. Istio's cases call a Service from a sidecar; here the calls
enter at the ingress gateway's port 80 (the walkthrough's services-gateway), our own manifests.
"""

from __future__ import annotations

import pytest

from tests.local_mesh import running
from tests.test_local_live import vs

HOST = "minimal.svc.kind.org"
ROUTE = "      route: [{destination: {host: minimal-service}}]\n"
# Every character RFC 9110 allows in a header name besides letters and digits ("weird header matches").
ODD_HEADER = "a!#$%&'*+-.^_`|~z"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with running(tmp_path_factory.mktemp("istio-cases") / "state") as m:
        m.apply_template("services/minimal-service.yaml.j2")
        yield m


def test_weird_and_pseudo_header_matches(mesh):
    # "weird header matches" and "pseudo header matches": an exact match on a header named with every
    # allowed symbol, and on ':method'; without a match the gateway answers 404.
    quoted = ODD_HEADER.replace("'", "''")
    mesh.apply(
        vs(
            f"    - match: [{{uri: {{prefix: /odd}}, headers: {{'{quoted}': {{exact: why}}}}}}]\n"
            + ROUTE
            + "    - match: [{uri: {prefix: /method}, headers: {':method': {exact: GET}}}]\n"
            + ROUTE
        )
    )
    assert mesh.get("/odd").status_code == 404
    assert mesh.get("/odd", headers={ODD_HEADER: "why"}).status_code == 200
    post = mesh.session.post(mesh.backend.ingress_url + "/method", headers={"Host": HOST}, timeout=10)
    assert post.status_code == 404
    assert mesh.get("/method").status_code == 200


@pytest.mark.parametrize(
    ("host", "location"),
    [
        (HOST, f"http://{HOST}/foo"),  # "to default": no :80 added, it is http's own port
        (f"{HOST}:80", f"http://{HOST}:80/foo"),  # "to default with host port": kept as the client wrote it
    ],
    ids=["to default", "to default with host port"],
)
def test_redirect_request_port(mesh, host, location):
    # "redirect request port": derivePort FROM_REQUEST_PORT on the port the request came in on (80).
    mesh.apply(
        vs(
            "    - match: [{uri: {exact: /foo}}]\n      redirect: {derivePort: FROM_REQUEST_PORT}\n"
            + "    -"
            + ROUTE[5:]
        )
    )
    answer = mesh.get("/foo", host=host, allow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (301, location)


def test_redirect_port_and_scheme(mesh):
    # "redirect port and scheme": https with the request's port gives https://host:80/foo (80 is not
    # https's default, so it is written out).
    mesh.apply(
        vs(
            "    - match: [{uri: {exact: /foo}}]\n      redirect: {derivePort: FROM_REQUEST_PORT, scheme: https}\n"
            + "    -"
            + ROUTE[5:]
        )
    )
    answer = mesh.get("/foo", allow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (301, f"https://{HOST}:80/foo")


def test_catch_all_route_short_circuits_the_others(mesh):
    # "catch all route short circuit the other routes": a catch-all entry first takes every request,
    # the more specific entry after it never serves.
    mesh.apply(
        vs(
            "    - directResponse: {status: 418, body: {string: catch-all}}\n"
            "    - match: [{uri: {prefix: /specific}}]\n" + ROUTE
        )
    )
    for path in ("/", "/specific", "/specific/deeper"):
        answer = mesh.get(path)
        assert (answer.status_code, answer.text) == (418, "catch-all"), path


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"end-user": "jason"}, 200), ({"end-user": ""}, 200), ({}, 200)],
    ids=["have end-user header and value", "have end-user header but value is empty", "do not have end-user header"],
)
def test_without_headers_regex_matching_any_string(mesh, headers, status):
    # "without headers regex match any string" (1.30.3): '.*' matches every value, the empty one too and,
    # from Istio 1.2x, an absent header (treated as empty), so the aborting entry never applies.
    mesh.apply(
        vs(
            "    - match: [{withoutHeaders: {end-user: {regex: '.*'}}}]\n"
            "      fault: {abort: {httpStatus: 403, percentage: {value: 100}}}\n" + ROUTE + "    -" + ROUTE[5:]
        )
    )
    assert mesh.get("/foo", headers=headers).status_code == status
