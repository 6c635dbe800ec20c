"""DestinationRule tls SIMPLE / MUTUAL (meshy/local/origination.py): what each release makes of it, what is
refused, where files are read, and real Envoy originating TLS to the real external HTTPS service.

Upstream: 1.8.6 pilot/pkg/networking/core/v1alpha3/cluster.go buildUpstreamClusterTLSContext; 1.28.10 and
1.30.3 pilot/pkg/networking/core/cluster_tls.go constructUpstreamTLS and setAutoSniAndAutoSanValidation.
"""

from __future__ import annotations

import base64
import re

import pytest

from meshy.local.model import Mount, Origination
from meshy.local.origination import (
    SYSTEM,
    check_origination,
    file_reader,
    origination,
    pod_mounts,
    proxy_files,
)
from meshy.local.release import release_of
from meshy.local.resources import BuildError, Resource
from meshy.net import wait_until
from meshy.render import RenderOptions, render
from tests.local_mesh import Mesh

OLD, NEW, MIDDLE = release_of("1.8.6"), release_of("1.30.3"), release_of("1.28.10")


@pytest.mark.parametrize(
    ("tls", "release", "want"),
    [
        # 1.8: nothing checked without caCertificates, no SNI of its own.
        ({"mode": "SIMPLE"}, OLD, Origination("SIMPLE")),
        ({"mode": "SIMPLE", "subjectAltNames": ["a"]}, OLD, Origination("SIMPLE")),
        ({"mode": "SIMPLE", "caCertificates": "/c", "subjectAltNames": ["a"]}, OLD,
         Origination("SIMPLE", ca="/c", subject_alt_names=("a",))),
        # 1.28 / 1.30: the system roots by default, SNI and SAN from the request's host when not given.
        ({"mode": "SIMPLE"}, NEW, Origination("SIMPLE", auto_sni=True, auto_san=True, ca=SYSTEM, tls13=True)),
        ({"mode": "SIMPLE"}, MIDDLE, Origination("SIMPLE", auto_sni=True, auto_san=True, ca=SYSTEM, tls13=True)),
        ({"mode": "SIMPLE", "sni": "s"}, NEW, Origination("SIMPLE", sni="s", ca=SYSTEM, tls13=True)),
        ({"mode": "SIMPLE", "subjectAltNames": ["a"]}, NEW,
         Origination("SIMPLE", auto_sni=True, subject_alt_names=("a",), ca=SYSTEM, tls13=True)),
        ({"mode": "SIMPLE", "insecureSkipVerify": True, "caCertificates": "/c"}, NEW,
         Origination("SIMPLE", auto_sni=True, tls13=True)),
        ({"mode": "MUTUAL", "clientCertificate": "/a", "privateKey": "/k", "caCertificates": "/c"}, NEW,
         Origination("MUTUAL", auto_sni=True, auto_san=True, ca="/c", cert="/a", key="/k", tls13=True)),
    ],
)  # fmt: skip
def test_each_release_translates_tls_as_istio_does(tls, release, want):
    assert origination(tls, release) == want


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"mode": "MUTUAL", "clientCertificate": "/a"}, "MUTUAL needs clientCertificate and privateKey"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(tls, message):
    with pytest.raises(BuildError, match=message):
        check_origination("dr", "spec.trafficPolicy", tls)


def deployment(annotations: dict[str, str]) -> Resource:
    return Resource(
        "Deployment", "apps/v1", "app", "default", {}, {"template": {"metadata": {"annotations": annotations}}}
    )


def test_user_volume_annotations_mount_secrets_into_the_sidecar():
    annotations = {
        "sidecar.istio.io/userVolume": '{"v": {"secret": {"secretName": "s"}}}',
        "sidecar.istio.io/userVolumeMount": '{"v": {"mountPath": "/etc/x/"}}',
    }
    assert pod_mounts(deployment(annotations), annotations) == (Mount("/etc/x", "s"),)
    assert pod_mounts(deployment({}), {}) == ()


@pytest.mark.parametrize(
    ("volume", "mount", "message"),
    [
        ('{"v": {"configMap": {"name": "c"}}}', '{"v": {"mountPath": "/x"}}', "mounts only Secrets"),
        ('{"v": {"secret": {}}}', '{"v": {"mountPath": "x"}}', "needs an absolute mountPath"),
        ("[1]", '{"v": {"mountPath": "/x"}}', "must be a JSON object"),
    ],
)
def test_unusable_mounts_are_refused_by_name(volume, mount, message):
    annotations = {"sidecar.istio.io/userVolume": volume, "sidecar.istio.io/userVolumeMount": mount}
    with pytest.raises(BuildError, match=message):
        pod_mounts(deployment(annotations), annotations)


def test_a_proxy_reads_mounted_secrets_then_this_machines_files(tmp_path):
    on_disk = tmp_path / "roots.pem"
    on_disk.write_text("ROOTS")
    secrets = {"s": {"data": {"ca.crt": base64.b64encode(b"MOUNTED").decode()}}}
    read = file_reader((Mount("/etc/x", "s"),), secrets)
    assert read("/etc/x/ca.crt").value == "MOUNTED"
    assert read("/etc/x/missing") is None
    assert (read(str(on_disk)).value, read(str(on_disk)).on_disk) == (str(on_disk), True)
    assert read(str(tmp_path / "none")) is None
    # A CA file the proxy does not have is marked, to be served as the mesh's root (calls then fail).
    files = proxy_files([Origination("SIMPLE", ca="/etc/y/ca.crt")], read)
    assert [f.absent for f in files] == [True]


# --- real Envoy: the sidecar of minimal-service originates TLS to the external service -----------------------


@pytest.fixture(scope="module", params=["1.8", "1.30"])
def mesh(request, tmp_path_factory):
    k8s = {"1.8": "1.19", "1.30": "1.36"}[request.param]
    mesh = Mesh(tmp_path_factory.mktemp(f"origination-{request.param}"), k8s, request.param)
    mesh.up()
    mesh.apply_template("istio/tls-origination-serviceentry.yaml.j2")
    yield mesh
    mesh.backend.down()


def rule(mesh: Mesh, pool: str = "", **tls) -> str:
    """The DestinationRule of the external service's TLS port; `pool`: more lines of its port-level entry."""
    spec = {"mode": "SIMPLE", **tls}
    fields = "".join(f"\n          {k}: {v}" for k, v in spec.items())
    return (
        f"apiVersion: {mesh.pair.istio_api}\nkind: DestinationRule\nmetadata: {{name: origination, namespace: default}}\n"
        "spec:\n  host: minimal.external.kind.org\n  trafficPolicy:\n    portLevelSettings:\n"
        f"      - port: {{number: 9443}}\n{pool}        tls:{fields}\n"
    )


def call(mesh: Mesh) -> str:
    response = mesh.bounce("http://minimal.external.kind.org:9090/origination")
    return response.json().get("body", "") if response.status_code == 200 else ""


def test_without_a_rule_plain_http_to_the_tls_port_fails(mesh):
    mesh.delete(rule(mesh))
    assert call(mesh) != "200 OK"


def test_the_trusted_ca_as_a_file_of_this_machine_lets_calls_through(mesh):
    mesh.apply(rule(mesh, caCertificates=mesh.backend.external_tls_dir / "ca.crt"))
    assert call(mesh) == "200 OK"
    log = mesh.backend.log_file("minimal-external")
    # Logged once answered, over TLS.
    assert wait_until(lambda: "[GET /origination " in log.read_text(), 5)
    assert all(" tls] 200" in line for line in log.read_text().splitlines() if "[GET /origination " in line)


def test_another_ca_refuses_the_certificate(mesh):
    mesh.apply(rule(mesh, caCertificates=mesh.backend.external_tls_dir / "other-ca.crt"))
    assert call(mesh) != "200 OK"


def test_without_ca_certificates_each_release_checks_as_it_does(mesh):
    """1.8 checks nothing; 1.30 checks against the system roots, which never signed the run-time CA."""
    mesh.apply(rule(mesh))
    assert (call(mesh) == "200 OK") == (mesh.pair.istio == "1.8")


def test_subject_alt_names_must_name_the_certificate(mesh):
    ca = mesh.backend.external_tls_dir / "ca.crt"
    mesh.apply(rule(mesh, caCertificates=ca, subjectAltNames='["wrong.example.org"]'))
    assert call(mesh) != "200 OK"
    mesh.apply(rule(mesh, caCertificates=ca, subjectAltNames='["minimal.external.kind.org"]'))
    assert call(mesh) == "200 OK"


def mounted_secret(mesh: Mesh) -> tuple[str, str]:
    """The scenario's Secret with the external service's CA and another, and the directory the sidecar of
    minimal-service mounts it at."""
    ca = (mesh.backend.external_tls_dir / "ca.crt").read_text()
    other = (mesh.backend.external_tls_dir / "other-ca.crt").read_text()
    tls = RenderOptions().external_tls
    options = RenderOptions(
        external_tls=type(tls)(
            ca=base64.b64encode(ca.encode()).decode(), other_ca=base64.b64encode(other.encode()).decode()
        )
    )
    return render("istio/tls-origination-secret.yaml.j2", mesh.pair, options), tls.mount


def test_the_mounted_secret_is_what_the_sidecar_reads(mesh):
    secret, mount = mounted_secret(mesh)
    mesh.apply(secret)
    mesh.apply(rule(mesh, caCertificates=f"{mount}/ca.crt"))
    assert call(mesh) == "200 OK"
    mesh.apply(rule(mesh, caCertificates=f"{mount}/other-ca.crt"))
    assert call(mesh) != "200 OK"
    # A proxy without the mount (the ingress gateway) has no such file: it trusts nothing outside.
    mesh.delete(secret)
    mesh.apply(rule(mesh, caCertificates=f"{mount}/ca.crt"))
    assert call(mesh) != "200 OK"


def test_insecure_skip_verify_is_honoured_or_refused_by_release(mesh):
    if mesh.pair.istio == "1.8":
        with pytest.raises(Exception, match=r"insecureSkipVerify is not served by Istio 1.8 \(from Istio 1.12\)"):
            mesh.apply(rule(mesh, insecureSkipVerify="true"))
    else:
        mesh.apply(rule(mesh, insecureSkipVerify="true"))
        assert call(mesh) == "200 OK"


def test_mutual_presents_the_client_certificate_the_server_asks_for(mesh, tmp_path):
    """MUTUAL against a real server that requires a client certificate of its CA (minimal-service with
    TLS_CLIENT_CA_FILE), the files on this machine: the right certificate is let in, another CA's is not."""
    import os
    import subprocess
    import sys

    from meshy import ROOT
    from meshy.net import free_port
    from meshy.scenarios.certificates import Authority

    server_ca, client_ca, stranger = Authority("server"), Authority("clients"), Authority("stranger")
    files = {"ca.crt": server_ca.pem, "clients.crt": client_ca.pem}
    for name, issued in {"server": server_ca.issue("mutual.example.org"), "client": client_ca.issue("c", True),
                         "stray": stranger.issue("c", True)}.items():  # fmt: skip
        files[f"{name}.crt"], files[f"{name}.key"] = issued.cert, issued.key
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    plain, tls = free_port(), free_port()
    env = {**os.environ, "SERVICE_PORT": str(plain), "TLS_PORT": str(tls), "TLS_CERT_FILE": str(tmp_path / "server.crt"),
           "TLS_KEY_FILE": str(tmp_path / "server.key"), "TLS_CLIENT_CA_FILE": str(tmp_path / "clients.crt")}  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "minimal_service"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        assert wait_until(lambda: b"Serving TLS" in (tmp_path / "server.log").read_bytes(), timeout=10)
        entry = (
            f"apiVersion: {mesh.pair.istio_api}\nkind: ServiceEntry\nmetadata: {{name: mutual, namespace: default}}\n"
            "spec:\n  hosts: [mutual.example.org]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n"
            f"  ports: [{{number: {tls}, name: tls, protocol: TLS}}, {{number: 80, name: http, protocol: HTTP}}]\n"
            "  endpoints: [{address: 127.0.0.1}]\n---\n"
            f"apiVersion: {mesh.pair.istio_api}\nkind: VirtualService\nmetadata: {{name: mutual, namespace: default}}\n"
            "spec:\n  hosts: [mutual.example.org]\n  http:\n"
            f"    - route: [{{destination: {{host: mutual.example.org, port: {{number: {tls}}}}}}}]\n"
        )
        mesh.apply(entry)

        def mutual(client: str) -> str:
            return (
                f"apiVersion: {mesh.pair.istio_api}\nkind: DestinationRule\nmetadata: {{name: mutual, namespace: default}}\n"
                "spec:\n  host: mutual.example.org\n  trafficPolicy:\n    tls:\n      mode: MUTUAL\n"
                f"      sni: mutual.example.org\n      caCertificates: {tmp_path / 'ca.crt'}\n"
                f"      clientCertificate: {tmp_path / client}.crt\n      privateKey: {tmp_path / client}.key\n"
            )

        def body() -> str:
            response = mesh.bounce("http://mutual.example.org/mutual")
            return response.json().get("body", "") if response.status_code == 200 else ""

        mesh.apply(mutual("client"))
        assert body() == "200 OK"
        # The server logs a request after answering it.
        assert wait_until(lambda: re.search(r"\[GET /mutual \S+ tls\] 200", (tmp_path / "server.log").read_text()), 5)
        mesh.apply(mutual("stray"))
        assert body() != "200 OK"
    finally:
        server.terminate()
        server.wait(timeout=10)
        mesh.delete(mutual("client"))
        mesh.delete(entry)
