"""Gateway PASSTHROUGH servers and VirtualService tls routes (meshy/local/passthrough.py cites Istio): the
chains they make, what is refused by name, and real Envoy passing the client's TLS to the external service."""

from __future__ import annotations

import pytest

from meshy.local import passthrough, topology
from meshy.local.build import Inputs, build_mesh
from meshy.local.release import release_of
from meshy.local.resources import ResourceError, ResourceSet, parse_documents
from meshy.local.topology import gateway_target_port
from meshy.scenarios import https
from meshy.scenarios.certificates import Authority, b64
from tests.local_mesh import Mesh

EXTERNAL = "minimal.external.kind.org"
ENTRY = f"""apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: external, namespace: default}}
spec:
  hosts: [{EXTERNAL}, other.example.org]
  location: MESH_EXTERNAL
  ports: [{{number: 9443, name: tls, protocol: TLS}}]
  resolution: DNS
"""


def gateway(mode: str = "PASSTHROUGH", hosts: str = f'["{EXTERNAL}"]', protocol: str = "TLS", extra: str = "") -> str:
    return (
        "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
        f"    - {{port: {{number: 443, name: p, protocol: {protocol}}}, hosts: {hosts}, tls: {{mode: {mode}}}}}\n{extra}"
    )


def route(
    name: str,
    sni: str = EXTERNAL,
    host: str = EXTERNAL,
    gateways: str = "[gw]",
    match: str = "",
    hosts: str = f'["{EXTERNAL}", other.example.org]',
) -> str:
    return (
        f"apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\n"
        f"spec:\n  hosts: {hosts}\n  gateways: {gateways}\n  tls:\n"
        f"    - match: [{{sniHosts: [{sni}]{match}}}]\n"
        f"      route: [{{destination: {{host: {host}, port: {{number: 9443}}}}}}]\n"
    )


def chains(*texts: str, release: str = "1.30") -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(server names, clusters) of each passthrough chain of the ingress gateway."""
    resources = ResourceSet().applied(r for text in texts for r in parse_documents(text, "test"))
    inputs = Inputs(resources, [], topology.gateways(topology.Layout()), {}, release=release_of(release))
    proxy = build_mesh(inputs).proxies["istio-ingressgateway"]
    return [
        (r.sni_hosts, tuple(c.cluster for c in r.clusters))
        for listener in proxy.listeners
        for r in listener.passthrough
    ]


POLICY = """apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules: [{to: [{operation: {paths: [/x]}}]}]
"""
CLUSTER = f"outbound|9443||{EXTERNAL}"
OTHER = "outbound|9443||other.example.org"


def test_the_first_match_for_a_server_name_wins_from_1_28():
    later = route("b", host="other.example.org")
    assert chains(ENTRY, gateway(), route("a"), later) == [((EXTERNAL,), (CLUSTER,))]


def test_a_match_for_another_port_or_gateway_makes_no_chain():
    assert chains(ENTRY, gateway(), route("a", match=", port: 8443"), route("b", match=", gateways: [elsewhere]")) == []
    assert chains(ENTRY, gateway(), route("a", match=", port: 443, gateways: [gw]")) == [((EXTERNAL,), (CLUSTER,))]


def test_a_star_sni_host_matches_any_name():
    assert chains(ENTRY, gateway(hosts='["*"]'), route("a", sni='"*"', hosts='["*"]')) == [((), (CLUSTER,))]


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ((ENTRY, gateway(), route("a"), route("b", host="other.example.org")), "Envoy rejects the listener"),
        ((ENTRY, route("a", gateways="[mesh]")), "tls routes work at gateways only"),
        ((ENTRY, gateway(), route("a", sni="x.example.org")), "SNI host x.example.org is within none"),
        ((ENTRY, gateway(protocol="HTTP")), "PASSTHROUGH needs protocol HTTPS or TLS"),
        ((ENTRY, gateway(mode="PASSTHROUGH, credentialName: c")), "tls.credentialName has no effect"),
        ((ENTRY, gateway(mode="AUTO_PASSTHROUGH")), "AUTO_PASSTHROUGH is not supported locally"),
        ((ENTRY, gateway(), POLICY), "policies on TCP traffic are not supported locally"),
        ((ENTRY, gateway(extra='    - {port: {number: 443, name: h, protocol: HTTP}, hosts: ["*"]}\n')),
         "both plaintext and TLS servers"),
        ((ENTRY, gateway(extra=f'    - {{port: {{number: 443, name: q, protocol: TLS}}, hosts: ["{EXTERNAL}"], '
                               'tls: {mode: PASSTHROUGH}}\n')), "is served by two TLS servers"),
    ],
)  # fmt: skip
def test_what_cannot_be_honoured_is_refused_in_one_line(texts, message):
    release = "1.8" if message == "Envoy rejects the listener" else "1.30"
    with pytest.raises(ResourceError, match=message) as caught:
        chains(*texts, release=release)
    assert "\n" not in str(caught.value)


# --- real Envoy: the ingress gateway passes the client's TLS through to the external service ------------------


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    mesh = Mesh(tmp_path_factory.mktemp("passthrough"))
    mesh.up()
    yield mesh
    mesh.backend.down()


def calls(mesh: Mesh, sni: str, trust: str, n: int) -> list[str]:
    address, port = mesh.backend.layout.gateway_ip(0), gateway_target_port(443)
    return https.calls(address, port, sni, trust, None, n)


def test_the_external_service_answers_with_its_own_certificate(mesh):
    ca = (mesh.backend.external_tls_dir / "ca.crt").read_text()
    other = (mesh.backend.external_tls_dir / "other-ca.crt").read_text()
    log = mesh.backend.log_file("minimal-external")
    mesh.apply(ENTRY + "---\n" + gateway() + "---\n" + route("a"))
    before = log.read_text().count(" tls] 200")
    assert calls(mesh, EXTERNAL, ca, 5) == ["200"] * 5
    # The certificate the client checked is the external service's: its CA vouches for it, another does not,
    # and the requests reached the service over TLS.
    assert calls(mesh, EXTERNAL, other, 2) == [https.UNTRUSTED] * 2
    assert log.read_text().count(" tls] 200") - before == 5
    # No chain for this name: the gateway closes the connection in the handshake.
    assert calls(mesh, "other.example.org", ca, 2) == [https.REFUSED] * 2
    mesh.delete(route("a"))
    assert calls(mesh, EXTERNAL, ca, 1) == [https.REFUSED]


def test_a_terminating_server_beside_it_on_the_same_port_keeps_its_own_certificate(mesh):
    # Istio lets SIMPLE and PASSTHROUGH servers share a port with different hosts: one chain each by SNI.
    authority = Authority("example.com")
    issued = authority.issue("secure.example.org")
    secret = (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: secure-credential, namespace: istio-system}\n"
        f'type: kubernetes.io/tls\ndata: {{tls.crt: "{b64(issued.cert)}", tls.key: "{b64(issued.key)}"}}\n'
    )
    simple = (
        '    - {port: {number: 443, name: s, protocol: HTTPS}, hosts: ["secure.example.org"], '
        "tls: {mode: SIMPLE, credentialName: secure-credential}}\n"
    )
    http = (
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: secure, namespace: default}\n"
        'spec:\n  hosts: ["secure.example.org"]\n  gateways: [gw]\n'
        "  http: [{route: [{destination: {host: minimal-service}}]}]\n"
    )
    ca = (mesh.backend.external_tls_dir / "ca.crt").read_text()
    mesh.apply("---\n".join([secret, ENTRY, gateway(extra=simple), route("a"), http]))
    log = mesh.backend.log_file("minimal-external")
    before = log.read_text().count(" tls] 200")
    assert calls(mesh, "secure.example.org", authority.pem, 3) == ["200"] * 3
    assert calls(mesh, EXTERNAL, ca, 3) == ["200"] * 3
    assert calls(mesh, "secure.example.org", ca, 1) == [https.UNTRUSTED]  # the gateway's own certificate
    assert log.read_text().count(" tls] 200") - before == 3


@pytest.mark.parametrize(
    ("name", "of", "within"),
    [
        ("a.example.org", "a.example.org", True),
        ("a.example.org", "*.example.org", True),
        ("*.a.example.org", "*.example.org", True),
        ("*.example.org", "*", True),
        ("*.example.org", "a.example.org", False),
        ("example.org", "*.example.org", False),
        ("a.example.com", "*.example.org", False),
    ],
)
def test_sni_hosts_must_lie_within_the_virtual_service_hosts(name, of, within):
    assert passthrough.subset_of(name, of) is within
