"""Istio's own TLS origination cases (DestinationRule tls SIMPLE / MUTUAL) on the local backend: the cluster
a sidecar gets, read back from the Envoy configuration the local backend writes.

Upstream, each case naming its test:
- 1.30.3 pilot/pkg/networking/core/cluster_tls_test.go TestBuildUpstreamClusterTLSContext and
  TestApplyUpstreamTLSSettings, cluster_builder_test.go TestApplyDestinationRule, TestApplyDestinationRuleOSCACert
  and TestInsecureSkipVerify (the code: cluster_tls.go constructUpstreamTLS, setAutoSniAndAutoSanValidation,
  buildUpstreamClusterTLSContext);
- 1.8.6 pilot/pkg/networking/core/v1alpha3/cluster_test.go TestBuildUpstreamClusterTLSContext (cluster.go
  buildUpstreamClusterTLSContext). 1.28.10's cluster_tls.go is 1.30.3's in what these cases touch.

Where the local backend cannot do what Istio does, the case expects a refusal naming the field. Upstream's
relative file names (root-cert.pem, path/to/cacert) are made absolute: a relative one is refused locally, as
the sidecar would read it from its agent's working directory.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from meshy.local import envoy
from meshy.local.build import BuildError
from meshy.local.resources import ResourceError
from meshy.net import free_port
from meshy.scenarios.certificates import Authority
from tests.local_mesh import Mesh
from tests.test_local_istio_semantics import ISTIO_18, ISTIO_128, ISTIO_130, mesh_of

HOST = "api.example.org"
TLS_RANGE = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}


def entry(extra: str = "", protocol: str = "HTTPS", endpoint: str = "{address: 127.0.0.9}") -> str:
    return (
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: api}\n"
        f"spec:\n  hosts: [{HOST}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n"
        f"  ports: [{{number: 443, name: https, protocol: {protocol}}}]\n"
        f"  endpoints: [{endpoint}]\n" + extra
    )


def rule(policy: str, host: str = HOST) -> str:
    return f"---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: api}}\nspec:\n  host: {host}\n{policy}\n"


def top(tls: str) -> str:
    return f"  trafficPolicy:\n    tls: {tls}"


def built(text: str, release, name: str) -> dict[str, Any]:
    """The Envoy cluster `name` of the web sidecar."""
    mesh = mesh_of(text, release)
    proxy = next(p for key, p in mesh.proxies.items() if key.startswith("web-"))
    return envoy.cluster(next(c for c in proxy.clusters if c.name == name))


def summary(cluster: dict[str, Any]) -> dict[str, Any]:
    """What a case decides, read from the Envoy cluster: None when it carries no TLS of its own."""
    socket = cluster.get("transport_socket")
    if socket is None or socket["typed_config"]["@type"].endswith("RawBuffer"):
        return {}
    context = socket["typed_config"]
    common = context["common_tls_context"]
    combined = common.get("combined_validation_context")
    matchers = (combined or {}).get("default_validation_context", {}).get("match_typed_subject_alt_names", [])
    options = cluster.get("typed_extension_protocol_options", {})
    upstream = next(iter(options.values()), {}).get("upstream_http_protocol_options", {})
    return {
        "sni": context.get("sni", ""),
        "root": combined["validation_context_sds_secret_config"]["name"] if combined else None,
        "sans": sorted({m["matcher"]["exact"] for m in matchers}),
        "cert": [c["name"] for c in common.get("tls_certificate_sds_secret_configs", [])],
        "tls13": common.get("tls_params") == TLS_RANGE,
        "auto_sni": upstream.get("auto_sni", False),
        "auto_san": upstream.get("auto_san_validation", False),
    }


def want(**fields) -> dict[str, Any]:
    base = {"sni": "", "root": None, "sans": [], "cert": [], "tls13": False, "auto_sni": False, "auto_san": False}
    return {**base, **fields}


NEW = {"tls13": True}
CASES = [
    # (upstream test / case name, release, manifests, expected summary)
    ("1.30 TestBuildUpstreamClusterTLSContext/tls mode SIMPLE, with no certs specified in tls", ISTIO_130,
     top("{mode: SIMPLE, subjectAltNames: [SAN], sni: some-sni.com}"),
     want(sni="some-sni.com", root="file-root:system", sans=["SAN"], **NEW)),
    ("1.30 TestBuildUpstreamClusterTLSContext/tls mode SIMPLE, with no certs specified in tls insecure", ISTIO_130,
     top("{mode: SIMPLE, subjectAltNames: [SAN], sni: some-sni.com, insecureSkipVerify: true}"),
     want(sni="some-sni.com", **NEW)),
    ("1.30 TestBuildUpstreamClusterTLSContext/tls mode SIMPLE, with AutoSni enabled and no sni specified in tls",
     ISTIO_130, top("{mode: SIMPLE, subjectAltNames: [SAN]}"),
     want(root="file-root:system", sans=["SAN"], auto_sni=True, **NEW)),
    ("1.30 TestBuildUpstreamClusterTLSContext/tls mode SIMPLE, with VerifyCert and AutoSni enabled without "
     "SubjectAltNames set", ISTIO_130, top("{mode: SIMPLE, sni: some-sni.com}"),
     want(sni="some-sni.com", root="file-root:system", **NEW)),
    ("1.30 TestBuildUpstreamClusterTLSContext/tls mode SIMPLE, with certs specified in tls", ISTIO_130,
     top("{mode: SIMPLE, caCertificates: /path/to/cacert, subjectAltNames: [SAN], sni: some-sni.com}"),
     want(sni="some-sni.com", root="file-root:/path/to/cacert", sans=["SAN"], **NEW)),
    ("1.30 TestBuildUpstreamClusterTLSContext/tls mode MUTUAL, with node metadata sdsEnabled true no root CA "
     "specified", ISTIO_130,
     top("{mode: MUTUAL, clientCertificate: /path/to/cert, privateKey: /path/to/key, subjectAltNames: [SAN], "
         "sni: some-sni.com}"),
     want(sni="some-sni.com", root="file-root:system", sans=["SAN"], cert=["file-cert:/path/to/cert~/path/to/key"],
          **NEW)),
    ("1.30 TestBuildUpstreamClusterTLSContext/tls mode MUTUAL, with node metadata sdsEnabled true", ISTIO_130,
     top("{mode: MUTUAL, clientCertificate: /path/to/cert, privateKey: /path/to/key, caCertificates: /path/to/cacert,"
         " subjectAltNames: [SAN], sni: some-sni.com}"),
     want(sni="some-sni.com", root="file-root:/path/to/cacert", sans=["SAN"],
          cert=["file-cert:/path/to/cert~/path/to/key"], **NEW)),
    ("1.28 (cluster_tls.go as 1.30) TestApplyDestinationRuleOSCACert/destination rule without CaCertificates",
     ISTIO_128, top("{mode: SIMPLE}"), want(root="file-root:system", auto_sni=True, auto_san=True, **NEW)),
    ("1.30 TestApplyDestinationRuleOSCACert/destination rule with empty string CaCertificates", ISTIO_130,
     top("{mode: SIMPLE, caCertificates: ''}"), want(root="file-root:system", auto_sni=True, auto_san=True, **NEW)),
    ("1.30 TestApplyDestinationRuleOSCACert/destination rule with CaCertificates", ISTIO_130,
     top("{mode: SIMPLE, caCertificates: /etc/certs/root-cert.pem}"),
     want(root="file-root:/etc/certs/root-cert.pem", auto_sni=True, auto_san=True, **NEW)),
    ("1.30 TestInsecureSkipVerify/With tls mode simple, InsecureSkipVerify is set false and ca cert is supplied",
     ISTIO_130,
     top(f"{{mode: SIMPLE, caCertificates: /etc/certs/root-cert.pem, sni: {HOST}, subjectAltNames: [{HOST}], "
         "insecureSkipVerify: false}"),
     want(sni=HOST, root="file-root:/etc/certs/root-cert.pem", sans=[HOST], **NEW)),
    ("1.30 TestInsecureSkipVerify/With tls mode simple, InsecureSkipVerify is set true", ISTIO_130,
     top(f"{{mode: SIMPLE, subjectAltNames: [{HOST}], insecureSkipVerify: true}}"), want(auto_sni=True, **NEW)),
    # The service's subjectAltNames stand in when the rule names none; auto SAN is decided on the rule alone.
    ("1.30 TestBuildUpstreamClusterTLSContext/tls mode SIMPLE, with SANs specified in service entries", ISTIO_130,
     top("{mode: SIMPLE, caCertificates: /path/to/cacert, sni: some-sni.com}"),
     want(sni="some-sni.com", root="file-root:/path/to/cacert", sans=["se-san.com"], **NEW)),
    ("1.30 constructUpstreamTLS: the rule's own names win over the service entry's", ISTIO_130,
     top("{mode: SIMPLE, subjectAltNames: [SAN], sni: some-sni.com}"),
     want(sni="some-sni.com", root="file-root:system", sans=["SAN"], **NEW)),
    ("1.30 setAutoSniAndAutoSanValidation: without sni the entry's names and auto SAN both", ISTIO_130,
     top("{mode: SIMPLE}"), want(root="file-root:system", sans=["se-san.com"], auto_sni=True, auto_san=True, **NEW)),
    # 1.8.6: no SNI of its own, no check without caCertificates, the service's names unused, Envoy's TLS range.
    ("1.8 TestBuildUpstreamClusterTLSContext/tls mode SIMPLE, with no certs specified in tls", ISTIO_18,
     top("{mode: SIMPLE, subjectAltNames: [SAN], sni: some-sni.com}"), want(sni="some-sni.com")),
    ("1.8 TestBuildUpstreamClusterTLSContext/tls mode SIMPLE, with certs specified in tls", ISTIO_18,
     top("{mode: SIMPLE, caCertificates: /etc/certs/root-cert.pem, subjectAltNames: [SAN], sni: some-sni.com}"),
     want(sni="some-sni.com", root="file-root:/etc/certs/root-cert.pem", sans=["SAN"])),
    ("1.8 cluster.go buildUpstreamClusterTLSContext: service entry names are for ISTIO_MUTUAL only", ISTIO_18,
     top("{mode: SIMPLE, caCertificates: /etc/certs/root-cert.pem}"), want(root="file-root:/etc/certs/root-cert.pem")),
    ("1.8 TestBuildUpstreamClusterTLSContext/tls mode MUTUAL, with node metadata sdsEnabled true", ISTIO_18,
     top("{mode: MUTUAL, clientCertificate: /path/to/cert, privateKey: /path/to/key, caCertificates: /etc/certs/root-cert.pem,"
         " subjectAltNames: [SAN], sni: some-sni.com}"),
     want(sni="some-sni.com", root="file-root:/etc/certs/root-cert.pem", sans=["SAN"],
          cert=["file-cert:/path/to/cert~/path/to/key"])),
]  # fmt: skip
SE_SANS = "  subjectAltNames: [se-san.com, se-san.com]\n"


@pytest.mark.parametrize(("case", "release", "policy", "expected"), CASES, ids=[c[0] for c in CASES])
def test_istio_case(case, release, policy, expected):
    # The service entry names its servers only where a case is about those names.
    names = SE_SANS if "service entr" in case or "entry's" in case else ""
    got = summary(built(entry(names) + rule(policy), release, f"outbound|443||{HOST}"))
    assert got == expected, case


@pytest.mark.parametrize("release", [ISTIO_18, ISTIO_130], ids=["1.8", "1.30"])
def test_subset_and_port_level_tls_reach_their_own_clusters(release):
    """1.30.3 cluster_builder_test.go TestApplyDestinationRule "subset destination rule with tls mode SIMPLE"
    and "port level destination rule with tls mode SIMPLE"; 1.8.6 cluster_builder_test.go TestMergeTrafficPolicy
    "subset overwrite top-level fields": a subset's tls replaces the rule's, on the subset's cluster only."""
    policy = (
        "  trafficPolicy:\n    tls: {mode: SIMPLE, sni: top.example.org}\n"
        "  subsets:\n    - name: v1\n      labels: {version: v1}\n"
        "      trafficPolicy: {tls: {mode: SIMPLE, sni: subset.example.org}}\n"
        "    - name: plain\n      labels: {version: v1}\n      trafficPolicy: {tls: {mode: DISABLE}}\n"
    )
    text = entry(endpoint="{address: 127.0.0.9, labels: {version: v1}}") + rule(policy)
    assert summary(built(text, release, f"outbound|443||{HOST}"))["sni"] == "top.example.org"
    assert summary(built(text, release, f"outbound|443|v1|{HOST}"))["sni"] == "subset.example.org"
    assert summary(built(text, release, f"outbound|443|plain|{HOST}")) == {}
    # Port level: the matching entry replaces the rule's tls on that port, and inherits nothing from it.
    port_level = (
        "  trafficPolicy:\n    tls: {mode: SIMPLE, sni: top.example.org}\n    portLevelSettings:\n"
        "      - port: {number: 443}\n        loadBalancer: {simple: ROUND_ROBIN}\n"
    )
    assert summary(built(entry() + rule(port_level), release, f"outbound|443||{HOST}")) == {}


def test_istio_mutual_to_a_service_entry_checks_its_names():
    """1.8.6 cluster.go buildAutoMtlsSettings (1.30.3 the same): ISTIO_MUTUAL without names of its own checks
    the service's accounts, which for a ServiceEntry are its subjectAltNames."""
    text = entry("  subjectAltNames: [spiffe://cluster.local/ns/x/sa/api]\n") + rule(top("{mode: ISTIO_MUTUAL}"))
    cluster = built(text, ISTIO_130, f"outbound|443||{HOST}")
    context = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    matchers = context["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
    assert [m["matcher"]["exact"] for m in matchers] == ["spiffe://cluster.local/ns/x/sa/api"]


@pytest.mark.parametrize("release", [ISTIO_18, ISTIO_130], ids=["1.8", "1.30"])
def test_simple_towards_a_mesh_service_replaces_auto_mtls(release):
    """1.30.3 cluster_tls_test.go TestApplyUpstreamTLSSettings "user specified simple tls" (1.8.6 the same
    case): the user's TLS is the cluster's one transport socket, with no tlsMode-istio match beside it."""
    cluster = built(
        rule(top("{mode: SIMPLE, sni: web}"), host="web"), release, "outbound|9090||web.default.svc.cluster.local"
    )
    assert "transport_socket_matches" not in cluster
    assert summary(cluster)["sni"] == "web"


def refusal(text: str, release=ISTIO_130) -> str:
    with pytest.raises((BuildError, ResourceError)) as raised:
        mesh_of(text, release)
    message = str(raised.value)
    assert "\n" not in message and len(message) < 300, message
    return message


@pytest.mark.parametrize(
    ("case", "tls", "words"),
    [
        # Istio logs an error and leaves the cluster without TLS: plaintext to a TLS port.
        ("TestBuildUpstreamClusterTLSContext/tls mode MUTUAL, with no client certificate",
         "{mode: MUTUAL, privateKey: some-fake-key}", "needs clientCertificate and privateKey"),
        ("TestBuildUpstreamClusterTLSContext/tls mode MUTUAL, with no client key",
         "{mode: MUTUAL, clientCertificate: some-fake-cert}", "needs clientCertificate and privateKey"),
        # A sidecar drops the whole TLS block when credentialName is set (no workloadSelector): plaintext.
        ("TestBuildUpstreamClusterTLSContext/tls mode SIMPLE, credentialName is set with proxy type Sidecar",
         "{mode: SIMPLE, credentialName: fake-cred}", "credentialName"),
        ("TestBuildUpstreamClusterTLSContext/tls mode MUTUAL, credentialName is set with proxy type Sidecar",
         "{mode: MUTUAL, credentialName: fake-cred}", "credentialName"),
        # Revocation lists are not checked locally.
        ("TestBuildUpstreamClusterTLSContext/tls mode SIMPLE, with certs specified in tls, with crl",
         "{mode: SIMPLE, caCertificates: /etc/certs/root-cert.pem, caCrl: path/to/crl}", "caCrl"),
    ],
)  # fmt: skip
def test_what_istio_would_not_originate_is_refused_by_name(case, tls, words):
    assert words in refusal(entry() + rule(top(tls))), case


@pytest.mark.parametrize("release", [ISTIO_18, ISTIO_130], ids=["1.8", "1.30"])
def test_http2_ports_are_refused_for_origination(release):
    """TestApplyUpstreamTLSSettings "user specified simple tls with h2" (1.8.6 and 1.30.3): towards an HTTP/2
    port Istio offers ALPN h2 and speaks HTTP/2; the local backend speaks HTTP/1.1 to every upstream."""
    message = refusal(entry(protocol="HTTP2") + rule(top("{mode: SIMPLE}")), release)
    assert "takes for HTTP/2" in message and "api" in message
    # A Service port named for HTTP/2 or gRPC (conversion.go ConvertProtocol); others are HTTP/1.1 as locally.
    service = "apiVersion: v1\nkind: Service\nmetadata: {name: h2}\nspec:\n  selector: {app: web}\n  ports: [{name: %s, port: 7070, targetPort: 9090}]\n"
    for name in ("grpc", "http2-api", "grpc-web"):
        assert "port 7070, which Istio takes for HTTP/2" in refusal(
            service % name + rule(top("{mode: SIMPLE}"), "h2"), release
        )
    for name in ("http", "grpcx", "web-grpc"):
        mesh_of(service % name + rule(top("{mode: SIMPLE}"), "h2"), release)


# --- real Envoy: what the differences above change on the wire ---------------------------------------------


@contextmanager
def https_server(directory: Path, name: str, newest_only: bool) -> Iterator[tuple[int, Path]]:
    """A real HTTPS server on loopback, its certificate for `name` from a CA of its own (the CA file is
    yielded); `newest_only`: it speaks TLS 1.3 and nothing older."""
    authority = Authority(f"{name} CA")
    issued = authority.issue(name)
    (directory / "ca.crt").write_text(authority.pem)
    (directory / "server.crt").write_text(issued.cert)
    (directory / "server.key").write_text(issued.key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "server.crt", directory / "server.key")
    if newest_only:
        context.minimum_version = ssl.TLSVersion.TLSv1_3

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Answer)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], directory / "ca.crt"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module", params=["1.8", "1.30"])
def live(request, tmp_path_factory) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path_factory.mktemp(f"istio-cases-{request.param}"), {"1.8": "1.19", "1.30": "1.36"}[request.param],
                request.param)  # fmt: skip
    mesh.up()
    yield mesh
    mesh.backend.down()


def external(mesh: Mesh, port: int, entry_names: str, tls: str) -> str:
    """A ServiceEntry for HOST on `port` (TLS), the plain port 80 routed to it, and a DestinationRule."""
    api = mesh.pair.istio_api
    return (
        f"apiVersion: {api}\nkind: ServiceEntry\nmetadata: {{name: api, namespace: default}}\n"
        f"spec:\n  hosts: [{HOST}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n"
        f"  ports: [{{number: {port}, name: tls, protocol: TLS}}, {{number: 80, name: http, protocol: HTTP}}]\n"
        f"  endpoints: [{{address: 127.0.0.1}}]\n{entry_names}---\n"
        f"apiVersion: {api}\nkind: VirtualService\nmetadata: {{name: api, namespace: default}}\n"
        f"spec:\n  hosts: [{HOST}]\n  http:\n    - route: [{{destination: {{host: {HOST}, port: {{number: {port}}}}}}}]\n"
        f"---\napiVersion: {api}\nkind: DestinationRule\nmetadata: {{name: api, namespace: default}}\n"
        f"spec:\n  host: {HOST}\n  trafficPolicy:\n    tls: {tls}\n"
    )


def answered(mesh: Mesh) -> bool:
    response = mesh.bounce(f"http://{HOST}/")
    return response.status_code == 200 and response.json().get("body", "") == "200 OK"


def test_a_server_of_tls_13_only_is_reached_from_1_28_on(live, tmp_path):
    """1.30.3 TestBuildUpstreamClusterTLSContext (every SIMPLE case: TlsMaximumProtocolVersion TLSv1_3);
    1.8.6 sets no TLS parameters, and Envoy's client stops at TLS 1.2 by default."""
    with https_server(tmp_path, HOST, newest_only=True) as (port, ca):
        manifests = external(live, port, "", f"{{mode: SIMPLE, caCertificates: {ca}, sni: {HOST}}}")
        live.apply(manifests)
        try:
            assert answered(live) == (live.pair.istio != "1.8")
        finally:
            live.delete(manifests)


def test_simple_towards_a_mesh_service_fails_as_its_app_speaks_no_tls(live):
    """What "user specified simple tls" means for an app behind a sidecar that serves plain HTTP: the caller's
    sidecar starts TLS that is not Istio's, the server side passes it to the app, and every call fails (503);
    without the rule auto mTLS carries them."""
    live.apply_template("services/bounced-service.yaml.j2")
    simple = rule(top("{mode: SIMPLE}"), host="bounced-service").replace(
        "name: api", "name: bounced-simple, namespace: default"
    )
    try:
        live.apply(simple)
        bodies = [live.bounce("http://bounced-service:9090/").json().get("body", "") for _ in range(10)]
        assert bodies == ["503 Service Unavailable"] * 10
        live.delete(simple)
        bodies = [live.bounce("http://bounced-service:9090/").json().get("body", "") for _ in range(10)]
        assert "503 Service Unavailable" not in bodies
    finally:
        live.delete(simple)
        live.delete_template("services/bounced-service.yaml.j2")


def test_the_service_entrys_names_are_checked_from_1_28_on(live, tmp_path):
    """1.30.3 TestBuildUpstreamClusterTLSContext "tls mode SIMPLE, with SANs specified in service entries": with
    `sni` set (no auto SAN) and no names in the rule, the certificate must carry a name of the entry's."""
    with https_server(tmp_path, HOST, newest_only=False) as (port, ca):
        tls = f"{{mode: SIMPLE, caCertificates: {ca}, sni: {HOST}}}"
        wrong = external(live, port, "  subjectAltNames: [other.example.org]\n", tls)
        try:
            live.apply(wrong)
            assert answered(live) == (live.pair.istio == "1.8")
            live.apply(external(live, port, f"  subjectAltNames: [{HOST}]\n", tls))
            assert answered(live)
        finally:
            live.delete(wrong)
