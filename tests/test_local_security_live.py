"""Workload identity, auto mTLS and PeerAuthentication on real Envoy with real TLS handshakes.

What the app behind a sidecar sees (X-Forwarded-Client-Cert), what a client
outside the mesh gets, and what the proxies count; Istio's semantics as
meshy/local/security.py and tls.py cite them.
"""

from __future__ import annotations

import http.server
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from cryptography import x509

from meshy.local.identity import KeyPair, MeshCA
from meshy.local.spiffe import spiffe_id
from meshy.metrics.prometheus import parse, total
from meshy.net import free_port, wait_until
from tests.local_mesh import Mesh, running

GATEWAY_ID = spiffe_id("istio-system", "istio-ingressgateway-service-account")
DEFAULT_ID = spiffe_id("default", "default")
REQUESTS = "istio_requests_total"


def resource(api: str, kind: str, name: str, spec: str, namespace: str = "default") -> str:
    """One manifest; `spec` holds the spec's lines, indented."""
    return (
        f"\n---\napiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}\n"
    )


def peer_auth(mode: str, name: str = "default", namespace: str = "default") -> str:
    return resource("security.istio.io/v1", "PeerAuthentication", name, f"  mtls: {{mode: {mode}}}", namespace)


def bounced_rule(mode: str) -> str:
    spec = f"  host: bounced-service\n  trafficPolicy: {{tls: {{mode: {mode}}}}}"
    return resource("networking.istio.io/v1", "DestinationRule", "bounced-tls", spec)


@pytest.fixture(scope="module")
def secure_mesh(tmp_path_factory) -> Iterator[Mesh]:
    with running(tmp_path_factory.mktemp("secure") / "state") as started:
        yield started


@pytest.fixture
def clean(secure_mesh: Mesh) -> Iterator[Mesh]:
    """Each test starts from, and returns to, the default: no policy, auto mTLS everywhere."""
    mesh = secure_mesh
    yield mesh
    mesh.delete(peer_auth("STRICT"))
    mesh.delete(peer_auth("STRICT", "root", "istio-system"))
    mesh.delete(bounced_rule("DISABLE"))


def pod_of(mesh, deployment: str):
    return next(p for p in mesh.backend.pods() if p.deployment == deployment)


def direct(mesh, deployment: str) -> requests.Response:
    """A plain HTTP call straight to a sidecar's inbound port: a client outside the mesh, on a new connection
    (a connection opened before a policy change keeps its filter chain while the listener drains it)."""
    pod = pod_of(mesh, deployment)
    with requests.Session() as session:
        session.trust_env = False
        return session.get(f"http://{pod.ip}:{pod.ports[0]}/", timeout=5, headers={"Connection": "close"})


def client_cert(response: requests.Response) -> dict[str, str]:
    """X-Forwarded-Client-Cert as the app echoed it, as key -> value (one element: one hop)."""
    header = response.json()["headers"].get("X-Forwarded-Client-Cert")
    if header is None:
        return {}
    return dict(part.split("=", 1) for part in header.split(";"))


def handshakes(mesh, deployment: str) -> int:
    pod = pod_of(mesh, deployment)
    stats = mesh.backend.proxy_stats(pod.name, "listener.")
    return stats.get(f"listener.{pod.ip}_{pod.ports[0]}.ssl.handshake", 0)


def mesh_calls(mesh, destination: str, **labels: str) -> float:
    samples = parse(mesh.metrics())
    return total(samples, REQUESTS, reporter="destination", destination_workload=destination, **labels)


def test_gateway_calls_the_sidecar_over_mutual_tls_and_the_app_sees_its_identity(clean):
    before = handshakes(clean, "minimal-service")
    response = clean.get()
    assert response.status_code == 200
    cert = client_cert(response)
    # The caller (the ingress gateway) by its URI SAN, the answering sidecar by its own (By).
    assert cert["URI"] == GATEWAY_ID
    assert cert["By"] == DEFAULT_ID
    assert len(cert["Hash"]) == 64
    # A new connection for a request is not guaranteed (keep-alive), but at least one handshake happened.
    assert handshakes(clean, "minimal-service") >= max(before, 1)


def test_permissive_accepts_plaintext_from_outside_without_an_identity(clean):
    response = direct(clean, "minimal-service")
    assert response.status_code == 200
    assert client_cert(response) == {}


def test_strict_refuses_plaintext_and_mesh_calls_carry_the_callers_identity(clean):
    clean.apply(peer_auth("STRICT"))
    for _ in range(5):
        with pytest.raises(requests.ConnectionError):
            direct(clean, "minimal-service")
    assert client_cert(clean.get())["URI"] == GATEWAY_ID
    before = mesh_calls(clean, "bounced-service", source_principal=DEFAULT_ID, connection_security_policy="mutual_tls")
    bounces = [clean.bounce("http://bounced-service:9090/") for _ in range(10)]
    # bounced-service fails about 70% of calls by design: an answer of its own, 200 or 500, is a call that arrived.
    assert all(b.status_code == 200 and b.json()["body"] in ("200 OK", "500 Internal Server Error") for b in bounces)
    after = mesh_calls(clean, "bounced-service", source_principal=DEFAULT_ID, connection_security_policy="mutual_tls")
    assert after - before == 10


def test_destination_rule_disable_to_a_strict_workload_fails(clean):
    clean.apply(peer_auth("STRICT"))
    clean.apply(bounced_rule("DISABLE"))
    bounces = [clean.bounce("http://bounced-service:9090/") for _ in range(5)]
    # The caller's sidecar sends plaintext; the STRICT side closes it: the caller's proxy answers 503.
    assert [b.json()["body"] for b in bounces] == ["503 Service Unavailable"] * 5


def test_destination_rule_istio_mutual_reaches_a_permissive_workload_over_tls(clean):
    clean.apply(bounced_rule("ISTIO_MUTUAL"))
    before = mesh_calls(clean, "bounced-service", connection_security_policy="mutual_tls")
    for _ in range(4):
        assert clean.bounce("http://bounced-service:9090/").status_code == 200
    assert mesh_calls(clean, "bounced-service", connection_security_policy="mutual_tls") - before == 4


def test_disable_sends_plaintext_even_from_the_gateway(clean):
    # Mesh-wide DISABLE: auto mTLS sends plaintext to the workload (mtls_checker.go), the app sees no identity.
    clean.apply(peer_auth("DISABLE", "root", "istio-system"))
    response = clean.get()
    assert response.status_code == 200
    assert client_cert(response) == {}
    assert direct(clean, "minimal-service").status_code == 200


def test_key_material_is_owner_only_and_certificates_carry_the_spiffe_id(clean):
    clean.get()
    pki = clean.backend.dir / "pki"
    assert stat.S_IMODE(pki.stat().st_mode) == 0o700
    files = [p for p in pki.rglob("*") if p.is_file()]
    assert any(p.name == "ca-key.pem" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in (pki / "workloads").glob("*.pem"):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [u.value for u in uris] == [
            path.stem.replace("_", "/").replace("cluster.local/", "spiffe://cluster.local/", 1)
        ]
    # The xDS server's saved snapshots hold the private keys too.
    saved = [p for p in clean.backend.dir.glob("xds*") if p.is_file() and p.suffix != ".sock"]
    for path in saved:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def authorization(name: str, spec: str) -> str:
    return resource("security.istio.io/v1", "AuthorizationPolicy", name, spec)


DENY_POST = authorization(
    "deny-post",
    """  selector: {matchLabels: {app: minimal-service}}
  action: DENY
  rules:
    - to: [{operation: {methods: [POST], paths: ["/bounce"]}}]
      when: [{key: "request.headers[x-block]", values: ["yes"]}]""",
)
ALLOW_GATEWAY = authorization(
    "allow-gateway",
    f"""  selector: {{matchLabels: {{app: minimal-service}}}}
  rules:
    - from: [{{source: {{principals: ["{GATEWAY_ID.removeprefix("spiffe://")}"]}}}}]
      to: [{{operation: {{notPaths: ["/private*"]}}}}]""",
)


@pytest.fixture
def authorized(clean):
    yield clean
    clean.delete(DENY_POST)
    clean.delete(ALLOW_GATEWAY)


def blocked_bounce(mesh) -> requests.Response:
    return mesh.session.post(
        mesh.backend.ingress_url + "/bounce",
        data='{"rebound":"true","endpoint":"http://bounced-service:9090/"}',
        headers={"Host": "minimal.svc.kind.org", "x-block": "yes"},
        timeout=10,
    )


def test_authorization_deny_and_allow_answer_403_rbac_access_denied(authorized):
    mesh = authorized
    mesh.apply(DENY_POST)
    # A keep-alive connection the gateway opened before keeps the old filter chain for one more
    # request (Envoy drains it with Connection: close), as on a cluster.
    assert wait_until(lambda: blocked_bounce(mesh).status_code == 403, timeout=5)
    blocked = blocked_bounce(mesh)
    assert (blocked.status_code, blocked.text) == (403, "RBAC: access denied")
    # Without the header the DENY rule does not match; the bounce reaches bounced-service.
    assert mesh.bounce("http://bounced-service:9090/").json()["body"] in ("200 OK", "500 Internal Server Error")
    mesh.apply(ALLOW_GATEWAY)
    assert wait_until(lambda: mesh.get("/private/x").status_code == 403, timeout=5)
    # The gateway's principal is allowed, except on /private; a client without a certificate matches no rule.
    assert mesh.get("/hello").status_code == 200
    denied = mesh.get("/private/x")
    assert (denied.status_code, denied.text) == (403, "RBAC: access denied")
    outside = direct(mesh, "minimal-service")
    assert (outside.status_code, outside.text) == (403, "RBAC: access denied")
    # DENY is enforced before ALLOW: the gateway is allowed, but the blocked bounce is still refused.
    assert blocked_bounce(mesh).status_code == 403


@contextmanager
def tls_server(pair: KeyPair, root: str, directory: Path) -> Iterator[int]:
    """An HTTPS server on loopback presenting `pair` and asking for a client certificate of `root`."""
    chain, key, ca = directory / "chain.pem", directory / "key.pem", directory / "root.pem"
    chain.write_text(pair.chain)
    key.write_text(pair.key)
    ca.write_text(root)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    context.load_verify_locations(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Answer)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


def istio_mutual_entry(port: int) -> str:
    entry = (
        f"  hosts: [tls-peer.example]\n  ports: [{{number: {port}, name: http, protocol: HTTP}}]\n"
        "  resolution: STATIC\n  endpoints: [{address: 127.0.0.1}]"
    )
    rule = "  host: tls-peer.example\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}"
    return resource("networking.istio.io/v1", "ServiceEntry", "tls-peer", entry) + resource(
        "networking.istio.io/v1", "DestinationRule", "tls-peer", rule
    )


def test_istio_mutual_accepts_only_a_peer_certified_by_the_mesh_ca(clean, tmp_path):
    mesh = clean
    mesh.get()  # the mesh's CA exists once a proxy has its certificate
    ca = MeshCA(mesh.backend.dir / "pki")
    stranger = MeshCA(tmp_path / "other-ca")
    for issuer, body in ((ca, "200 OK"), (stranger, "503 Service Unavailable")):
        (tmp_path / body[:3]).mkdir()
        with tls_server(issuer.workload(spiffe_id("default", "peer")), ca.root_pem, tmp_path / body[:3]) as port:
            mesh.apply(istio_mutual_entry(port))
            try:
                # The sidecar verifies the server against the mesh's root: another CA's certificate fails.
                answers = {mesh.bounce(f"http://tls-peer.example:{port}/").json()["body"] for _ in range(3)}
                assert answers == {body}
            finally:
                mesh.delete(istio_mutual_entry(port))
