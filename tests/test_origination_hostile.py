"""Hostile input to TLS origination and the sidecar's Secret mounts: every case ends in one short refusal
line with nothing changed, or in what the sidecar in a cluster would do with it (meshy/local/origination.py).
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator

import pytest

from meshy.local.build import BuildError
from meshy.local.model import Mount, Origination
from meshy.local.origination import SYSTEM, file_reader, pod_mounts, proxy_files
from meshy.local.resources import ResourceError
from tests.local_mesh import Mesh
from tests.test_local_istio_semantics import ISTIO_18, ISTIO_130, mesh_of
from tests.test_origination import deployment, mounted_secret, rule

VOLUME = '{"v": {"secret": {"secretName": "s"}}}'


def mounts(volume: str, mount: str) -> tuple[Mount, ...]:
    annotations = {"sidecar.istio.io/userVolume": volume, "sidecar.istio.io/userVolumeMount": mount}
    return pod_mounts(deployment(annotations), annotations)


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and len(message) < 300, message
    return message


@pytest.mark.parametrize(
    ("volume", "mount", "words"),
    [
        # json.loads recurses per nesting level: deep enough, it would end in a RecursionError traceback.
        ("[" * 100_000 + "]" * 100_000, "{}", "must be a JSON object"),
        ('"just a string"', "{}", "must be a JSON object"),
        (VOLUME, '{"v": {"mountPath": "/"}}', "root directory"),
        (VOLUME, '{"v": {"mountPath": "/etc/.."}}', "root directory"),
        (VOLUME, '{"v": {"mountPath": "relative/dir"}}', "absolute mountPath"),
        (VOLUME, '{"v": {"mountPath": "/etc/x\\u0000"}}', "absolute mountPath"),
        (VOLUME, '{"v": {"mountPath": 5}}', "absolute mountPath"),
        (VOLUME, '{"v": "/etc/x"}', "absolute mountPath"),
        ('{"v": {"secret": {"secretName": 5}}}', '{"v": {"mountPath": "/etc/x"}}', "secretName a string"),
        ('{"v": {"secret": "s"}}', '{"v": {"mountPath": "/etc/x"}}', "needs a Secret volume"),
        # What Kubernetes refuses in the injected pod, which would then never start.
        ('{"Bad_Name": {"secret": {}}}', '{"Bad_Name": {"mountPath": "/etc/x"}}', "must be a DNS-1123 label"),
        ('{"istio-envoy": {"secret": {}}}', '{"istio-envoy": {"mountPath": "/etc/x"}}', "Istio's injector adds"),
        (VOLUME, '{"v": {"mountPath": "/etc/istio/pod/"}}', "where Istio's injector mounts its own volume"),
        # Fields that would change what the sidecar sees there are refused, not left aside.
        ('{"v": {"secret": {"secretName": "s", "items": [{"key": "ca.crt", "path": "roots.pem"}]}}}',
         '{"v": {"mountPath": "/etc/x"}}', "field items is not supported locally"),
        (VOLUME, '{"v": {"mountPath": "/etc/x.pem", "subPath": "ca.crt"}}', "field subPath is not supported"),
        ('{"v": {"secret": {"secretName": "s"}, "configMap": {"name": "c"}}}', '{"v": {"mountPath": "/etc/x"}}',
         "field configMap is not supported"),
        ('{"v": {"secret": {"secretName": "s"}}, "w": {"secret": {"secretName": "t"}}}',
         '{"v": {"mountPath": "/etc/x"}, "w": {"mountPath": "/etc//x/"}}', "both mount at /etc/x"),
    ],
)  # fmt: skip
def test_unusable_mount_annotations_are_refused_in_one_line(volume, mount, words):
    with pytest.raises(BuildError) as raised:
        mounts(volume, mount)
    assert words in one_line(raised.value)


def test_mount_paths_are_folded_as_the_container_runtime_resolves_them():
    assert mounts(VOLUME, '{"v": {"mountPath": "//etc/a/../x//"}}') == (Mount("/etc/x", "s"),)
    # What the local mount leaves aside changes nothing a reading sidecar sees.
    inert = '{"v": {"secret": {"secretName": "s", "optional": true, "defaultMode": 256}}}'
    assert mounts(inert, '{"v": {"mountPath": "/etc/x", "readOnly": true}}') == (Mount("/etc/x", "s"),)


def test_the_deepest_mount_and_the_folded_path_decide_what_is_read():
    secrets = {
        "outer": {"data": {"ca.crt": base64.b64encode(b"OUTER").decode()}},
        "inner": {"data": {"ca.crt": base64.b64encode(b"INNER").decode()}},
    }
    read = file_reader((Mount("/etc/x", "outer"), Mount("/etc/x/y", "inner")), secrets)
    assert read("/etc/x/y/ca.crt").value == "INNER"
    assert read("/etc/x/ca.crt").value == "OUTER"
    assert read("/etc/x/y/../ca.crt").value == "OUTER"
    assert read("/etc/x/./y//ca.crt").value == "INNER"
    # The OS roots are the first bundle the sidecar has, one mounted over the image's included.
    bundle = {"ca-certificates.crt": base64.b64encode(b"MOUNTED ROOTS").decode()}
    roots = file_reader((Mount("/etc/ssl/certs", "roots"),), {"roots": {"data": bundle}})
    assert roots(SYSTEM).value == "MOUNTED ROOTS"
    # A mounted directory hides what this machine has at that path; a missing Secret leaves it empty.
    assert file_reader((Mount("/etc", "gone"),), secrets)("/etc/hostname") is None


def test_mounted_text_that_is_no_certificate_is_not_served():
    garbage = {"s": {"data": {"roots.pem": base64.b64encode(b"not a certificate").decode()}}}
    read = file_reader((Mount("/etc/x", "s"),), garbage)
    (ca,) = proxy_files([Origination("SIMPLE", ca="/etc/x/roots.pem")], read)
    assert ca.absent
    assert proxy_files([Origination("MUTUAL", cert="/etc/x/roots.pem", key="/etc/x/roots.pem")], read) == ()


def refusal(text: str, release=ISTIO_130) -> str:
    with pytest.raises((BuildError, ResourceError)) as raised:
        mesh_of(text, release)
    return one_line(raised.value)


def external_rule(tls: str) -> str:
    return (
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: api}\n"
        "spec:\n  hosts: [api.example.org]\n  resolution: STATIC\n"
        "  ports: [{number: 443, name: https, protocol: HTTPS}]\n  endpoints: [{address: 127.0.0.9}]\n---\n"
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: api}\n"
        f"spec:\n  host: api.example.org\n  trafficPolicy:\n    tls: {tls}\n"
    )


@pytest.mark.parametrize(
    ("tls", "words"),
    [
        ("{mode: SIMPLE, caCertificates: ca.crt}", "tls.caCertificates 'ca.crt' is not an absolute path"),
        ("{mode: SIMPLE, caCertificates: ../etc/ca.crt}", "is not an absolute path"),
        ("{mode: MUTUAL, clientCertificate: c.crt, privateKey: /k}", "tls.clientCertificate 'c.crt'"),
        ("{mode: MUTUAL, clientCertificate: /c, privateKey: k.pem}", "tls.privateKey 'k.pem'"),
        ("{mode: SIMPLE, caCertificates: /etc/a~b.crt}", "tls.caCertificates '/etc/a~b.crt' holds '~'"),
        ("{mode: MUTUAL, clientCertificate: /c~, privateKey: /k}", "tls.clientCertificate '/c~' holds '~'"),
    ],
)
def test_file_names_the_agent_cannot_serve_are_refused_by_name(tls, words):
    assert words in refusal(external_rule(tls))


def test_system_names_the_os_roots_only_where_the_agent_knows_it():
    """pkg/security/security.go FileRootSystemCACert (1.28.10, 1.30.3); 1.8.6's agent has no such name and
    would look for a file called "system"."""
    mesh_of(external_rule("{mode: SIMPLE, caCertificates: system}"), ISTIO_130)
    assert "'system' is not an absolute path" in refusal(external_rule("{mode: SIMPLE, caCertificates: system}"),
                                                          ISTIO_18)  # fmt: skip


@pytest.mark.parametrize("key", ["a/b", ".", "..", "..data"])
def test_a_secret_key_that_is_no_file_name_is_refused(key):
    """k8s.io/apimachinery IsConfigMapKey: a mounted Secret's keys are file names in its directory."""
    secret = f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ntype: Opaque\nstringData: {{'{key}': x}}\n"
    assert f"not '{key}'" in refusal(secret)


# --- real Envoy: what reaches a live mesh ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path_factory.mktemp("origination-hostile"), "1.36", "1.30")
    mesh.up()
    mesh.apply_template("istio/tls-origination-serviceentry.yaml.j2")
    yield mesh
    mesh.backend.down()


def answered(mesh: Mesh) -> bool:
    response = mesh.bounce("http://minimal.external.kind.org:9090/hostile")
    return response.status_code == 200 and response.json().get("body", "") == "200 OK"


def test_a_file_that_holds_no_certificate_is_not_served(mesh, tmp_path):
    """Istio's agent parses a file before serving it (served() in origination.py cites where): text that is
    no certificate, however large, is a CA the sidecar lacks and the calls fail; the mesh keeps taking
    other changes, also when a file that held a certificate at apply time is overwritten later."""
    good = mesh.backend.external_tls_dir / "ca.crt"
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    (tmp_path / "huge.pem").write_bytes(b"A" * 20_000_000)
    (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    for path in (tmp_path / "notes.txt", tmp_path / "huge.pem", tmp_path / "broken.pem"):
        mesh.apply(rule(mesh, caCertificates=path))
        assert not answered(mesh), path
    copy = tmp_path / "copy.crt"
    copy.write_text(good.read_text())
    mesh.apply(rule(mesh, caCertificates=copy))
    assert answered(mesh)
    copy.write_text("overwritten\n")
    mesh.apply_template("istio/bounced-virtualservice-retries.yaml.j2")
    mesh.delete_template("istio/bounced-virtualservice-retries.yaml.j2")
    mesh.apply(rule(mesh, caCertificates=good))
    assert answered(mesh)


@pytest.mark.parametrize("path", ["/etc", "/dev/zero", "fifo", "/etc/meshy/none/ca.crt"])
def test_what_is_no_regular_file_is_a_ca_the_sidecar_lacks(mesh, tmp_path, path):
    """A directory, a device, a FIFO, a missing file: Istio's agent serves nothing for it (reading /dev/zero it
    would never finish) and the calls fail; locally they fail at once, and nothing is opened."""
    if path == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    started = time.monotonic()
    mesh.apply(rule(mesh, caCertificates=path))
    assert time.monotonic() - started < 10
    assert not answered(mesh)
    mesh.apply(rule(mesh, caCertificates=mesh.backend.external_tls_dir / "ca.crt"))
    assert answered(mesh)


def test_mutual_with_files_the_sidecar_lacks_fails_without_a_long_wait(mesh):
    """Envoy would wait 15 s for a client certificate nobody serves; the apply returns within a few seconds and
    the calls fail, as they do in Istio once the wait is over."""
    ca = mesh.backend.external_tls_dir / "ca.crt"
    started = time.monotonic()
    mesh.apply(rule(mesh, mode="MUTUAL", caCertificates=ca, clientCertificate="/none/c.crt", privateKey="/none/c.key"))
    assert time.monotonic() - started < 10
    assert not answered(mesh)
    mesh.apply(rule(mesh, caCertificates=ca))
    assert answered(mesh)


def test_a_rule_flipping_between_modes_ends_in_the_last_ones_behaviour(mesh):
    ca = mesh.backend.external_tls_dir / "ca.crt"
    own = {"caCertificates": ca, "clientCertificate": ca.parent / "tls.crt", "privateKey": ca.parent / "tls.key"}
    modes = [
        ({"caCertificates": ca}, True),
        ({"mode": "DISABLE"}, False),  # plaintext to the TLS port
        ({"mode": "MUTUAL", **own}, True),  # the external service asks for no client certificate
        ({"mode": "ISTIO_MUTUAL"}, False),  # the mesh's certificate, which the server does not trust
        ({"insecureSkipVerify": "true"}, True),
    ]
    for tls, works in modes * 3:
        mesh.apply(rule(mesh, **tls))
        assert answered(mesh) == works, tls
    mesh.delete(rule(mesh))
    assert not answered(mesh)


def test_deleting_the_secret_a_rule_reads_empties_the_mount(mesh):
    """minimal-service mounts the Secret with optional: true (services/minimal-service.yaml.j2): without it the
    directory is empty and the rule's CA is missing, so calls fail; applied again, they pass. A changed CA
    leaves open connections be (Envoy checks certificates at the handshake): one request per connection."""
    secret, mount = mounted_secret(mesh)
    mesh.apply(secret)
    mesh.apply(
        rule(
            mesh,
            "        connectionPool: {http: {maxRequestsPerConnection: 1}}\n",
            caCertificates=f"{mount}/ca.crt",
        )
    )
    assert answered(mesh)
    mesh.delete(secret)
    assert not answered(mesh)
    mesh.apply(secret)
    assert answered(mesh)
    mesh.delete(secret)
