"""Gateway servers with tls and the Secrets they name: Istio's rules (meshy/local/gateway_tls.py and
credentials.py cite them), the refusals, and on real Envoy a Secret that changes reaching the gateway."""

from __future__ import annotations

import pytest

from meshy.local import topology
from meshy.local.build import Inputs, build_mesh
from meshy.local.credentials import CredentialError, ca_certificates, server_credential
from meshy.local.resources import ResourceError, ResourceSet, parse_documents
from meshy.local.upstreams import gateway_target_port
from meshy.net import wait_until
from meshy.scenarios import https
from meshy.scenarios.certificates import Authority, b64
from tests.local_mesh import running

HOST = "web.example.org"
CA = Authority("test CA")
SERVER = CA.issue(HOST)
OTHER = Authority("other CA").issue(HOST)


def secret(name: str = "cred", **data: str) -> str:
    values = data or {"tls.crt": b64(SERVER.cert), "tls.key": b64(SERVER.key)}
    lines = "".join(f'\n  {key}: "{value}"' for key, value in values.items())
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ndata:{lines}\n"


def gateway(*servers: str) -> str:
    body = "".join(f"\n    - {server}" for server in servers)
    return (
        "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\n"
        f"spec:\n  selector: {{istio: ingressgateway}}\n  servers:{body}\n"
    )


def https_server(mode: str = "SIMPLE", hosts: str = HOST, credential: str = "cred", extra: str = "") -> str:
    return (
        f'{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: ["{hosts}"], '
        f"tls: {{mode: {mode}, credentialName: {credential}{extra}}}}}"
    )


PLAIN = '{port: {number: 443, name: http, protocol: HTTP}, hosts: ["plain.example.org"]}'


def build(*texts: str):
    resources = ResourceSet().applied(r for text in texts for r in parse_documents(text, "test"))
    layout = topology.Layout()
    return build_mesh(Inputs(resources, [], topology.gateways(layout), {})).proxies["istio-ingressgateway"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tls.crt": "not base64!", "tls.key": b64(SERVER.key)}, "data.tls.crt is not base64"),
        ({"tls.crt": b64(SERVER.cert), "tls.key": b64(OTHER.key)}, "tls.key is not the key of the certificate"),
        ({"tls.crt": b64("hello"), "tls.key": b64(SERVER.key)}, "tls.crt holds no PEM certificate"),
        ({"tls.crt": b64(SERVER.cert), "tls.key": b64("hello")}, "tls.key holds no unencrypted PEM private key"),
    ],
)
def test_a_secret_with_bad_content_is_refused_in_one_line(data, message):
    with pytest.raises(ResourceError, match=message) as caught:
        parse_documents(secret(**data), "test")
    assert "\n" not in str(caught.value)


def test_a_tls_secret_needs_both_keys_as_the_api_server_says():
    text = secret(**{"tls.crt": b64(SERVER.cert)}).replace("\ndata:", "\ntype: kubernetes.io/tls\ndata:")
    with pytest.raises(ResourceError, match="needs the key tls.key"):
        parse_documents(text, "test")


def test_credentials_are_read_in_istios_order():
    generic = {"data": {"cert": b64(SERVER.cert), "key": b64(SERVER.key), "tls.crt": b64(OTHER.cert)}}
    assert server_credential({"c": generic}, "c").chain == SERVER.cert  # cert/key before tls.crt/tls.key
    own = {"data": {"ca.crt": b64("own")}}
    separate = {"data": {"cacert": b64("separate")}}
    assert ca_certificates({"c": own, "c-cacert": separate}, "c") == "separate"  # <name>-cacert first
    assert ca_certificates({"c": own}, "c") == "own"
    with pytest.raises(CredentialError):
        server_credential({"c": own}, "c")


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ((gateway(https_server("ISTIO_MUTUAL")), secret()), "tls.mode ISTIO_MUTUAL is not supported locally"),
        ((gateway(https_server("ISTIO_MUTUAL")), secret()), "tls.mode ISTIO_MUTUAL is not supported locally"),
        ((gateway(https_server()),), "credentialName cred names no Secret cred"),
        ((gateway(https_server("MUTUAL")), secret()), "needs a CA for MUTUAL"),
        (
            (gateway('{port: {number: 443, name: https, protocol: HTTPS}, hosts: ["*"]}'),),
            "protocol HTTPS needs tls settings",
        ),
        (
            (gateway('{port: {number: 80, name: h, protocol: HTTP}, hosts: ["*"], tls: {mode: SIMPLE}}'),),
            "tls settings need protocol HTTPS",
        ),
        ((gateway(https_server(), PLAIN), secret()), "has both plaintext and TLS servers"),
        ((gateway(https_server(), https_server()), secret()), "is served by two TLS servers"),
        ((gateway(https_server(extra=", subjectAltNames: [a]")), secret()), "only MUTUAL asks for"),
        (
            (gateway(https_server(extra=", minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2")), secret()),
            "is above maxProtocolVersion",
        ),
        ((gateway(https_server(extra=", httpsRedirect: true")), secret()), "field .*httpsRedirect is not supported"),
    ],
)
def test_what_the_local_gateway_cannot_serve_is_refused_by_name(texts, message):
    with pytest.raises(ResourceError, match=message) as caught:
        build(*texts)
    assert "\n" not in str(caught.value)


def test_a_changed_secret_changes_the_gateways_model():
    # The proxy's digest is its model's: a rotated certificate must change it, or it is never pushed.
    before = build(gateway(https_server()), secret())
    after = build(gateway(https_server()), secret(**{"tls.crt": b64(OTHER.cert), "tls.key": b64(OTHER.key)}))
    assert before != after
    assert [server.chain for listener in after.listeners for server in listener.tls] == [OTHER.cert]


ROUTE = (
    "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: web, namespace: default}\n"
    f'spec:\n  hosts: ["{HOST}"]\n  gateways: [gw]\n  http:\n    - route: [{{destination: {{host: minimal-service}}}}]\n'
)


def test_the_gateway_serves_the_secrets_certificate_and_follows_its_changes(tmp_path):
    rotated_ca = Authority("rotated CA")
    rotated = rotated_ca.issue(HOST)
    with running(tmp_path / "state") as mesh:
        mesh.apply(secret() + "---\n" + gateway(https_server()) + "---\n" + ROUTE)
        address, port = mesh.backend.layout.gateway_ip(0), gateway_target_port(443)

        def outcomes(trust: str) -> list[str]:
            return https.calls(address, port, HOST, trust, None, 5)

        assert wait_until(lambda: outcomes(CA.pem) == ["200"] * 5, timeout=10)
        assert outcomes(rotated_ca.pem) == [https.UNTRUSTED] * 5
        mesh.apply(secret(**{"tls.crt": b64(rotated.cert), "tls.key": b64(rotated.key)}))
        assert wait_until(lambda: outcomes(rotated_ca.pem) == ["200"] * 5, timeout=10)
        assert outcomes(CA.pem) == [https.UNTRUSTED] * 5
        # The Secret cannot go while the Gateway names it; the Gateway (with its route) and then the Secret can.
        with pytest.raises(ResourceError, match="names no Secret cred"):
            mesh.delete(secret())
        mesh.delete(gateway(https_server()) + "---\n" + ROUTE)
        mesh.delete(secret())
        assert outcomes(CA.pem) == [https.REFUSED] * 5
