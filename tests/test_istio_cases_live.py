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


HASHED = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: hashed, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: hashed}}
  template:
    metadata: {labels: {app: hashed}}
    spec:
      containers: [{name: hashed, image: minimal-service:v1, ports: [{containerPort: 9090}]}]
---
apiVersion: v1
kind: Service
metadata: {name: hashed, namespace: default}
spec:
  selector: {app: hashed}
  ports: [{port: 9090, name: http}]
"""
# 12 requests over 3 pods: a balancer that ignores the key sends them all to one pod with probability
# 3 * (1/3)^12 < 1e-5, well inside the 0.001 the project's statistical tests allow.
CALLS = 12


def served_by(mesh, **kwargs) -> set[str]:
    return {mesh.get("/", **kwargs).json()["servedBy"] for _ in range(CALLS)}


@pytest.mark.parametrize(
    ("hash_key", "request_with"),
    [
        ("httpHeaderName: x-user", {"headers": {"x-user": "jason"}}),
        ("httpQueryParameterName: user", {"params": {"user": "jason"}}),
        ("httpCookie: {name: session, ttl: 0s}", {"cookies": {"session": "jason"}}),
    ],
    ids=["http header", "query param", "http cookie without ttl"],
)
def test_consistent_hashing_keeps_one_pod_per_key(mesh, hash_key, request_with):
    # routing.go hashing cases ("http header", "query param", "http cookie without ttl", and "no
    # consistent"): one key always reaches the same pod; without a hash the pods share the calls.
    mesh.apply(HASHED + "---\n" + vs("    - route: [{destination: {host: hashed}}]"))
    assert len(served_by(mesh)) > 1, "no consistent"
    mesh.apply(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: hashed, namespace: default}\n"
        f"spec:\n  host: hashed\n  trafficPolicy: {{loadBalancer: {{consistentHash: {{{hash_key}}}}}}}\n"
    )
    try:
        assert len(served_by(mesh, **request_with)) == 1
    finally:
        mesh.delete(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: hashed, namespace: default}\n"
        )
