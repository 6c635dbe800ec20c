"""TLS origination: a DestinationRule's `tls` SIMPLE or MUTUAL towards a server outside the mesh.

Istio's translation differs by release, and both are reproduced:

- 1.8.6 (pilot/pkg/networking/core/v1alpha3/cluster.go buildUpstreamClusterTLSContext):
  SNI only when `sni` is set; the server is verified only when `caCertificates`
  names a file, then against it and `subjectAltNames`.
- 1.28.10 and 1.30.3 (pilot/pkg/networking/core/cluster_tls.go constructUpstreamTLS,
  setAutoSniAndAutoSanValidation): without `sni` Envoy takes the SNI from the
  request's host (auto_sni) and, without `subjectAltNames`, checks the certificate
  against that name (auto_san_validation); without `caCertificates` the server is
  checked against the system's roots (SDS "file-root:system");
  `insecureSkipVerify` (from 1.12, istio/api destination_rule.proto) turns checks off;
  TLS 1.3 is offered (defaultUpstreamCommonTLSContext; Envoy's client default stops at 1.2);
  a ServiceEntry's `subjectAltNames` are checked when the rule names none.

Files reach Envoy as Istio's agent serves them, over SDS named "file-root:<path>"
and "file-cert:<cert>~<key>" (pkg/security/security.go). A path is read where the
pod's sidecar would read it: under a mount of the pod's
`sidecar.istio.io/userVolumeMount` annotation whose `sidecar.istio.io/userVolume`
is a Secret, the Secret's key of that name (the injection template at 1.8.6,
1.28.10 and 1.30.3 mounts them into istio-proxy: pkg/kube/inject/testdata/inject/
user-volume.yaml.injected at each tag; the agent serves "file-root:" names from files at each,
security/pkg/nodeagent/cache/secretcache.go generateFileSecret); elsewhere the file of that path on this
machine, which stands for the proxy image's own files (its CA bundle). A
sidecar whose agent cannot read a CA file never gets that secret, so its calls
over the cluster fail (after Envoy's 15 s wait for it); locally such a proxy
checks the server against the mesh's own root instead, which signed nothing
outside the mesh: the calls fail the same way, at once. An absent client
certificate is not served at all (Envoy waits 1 s for it, not 15 s). A file the agent would not
serve (no certificate in its first PEM block) counts as absent.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meshy.local.credentials import decoded
from meshy.local.model import Mount, Origination, ProxyFile
from meshy.local.release import IstioRelease
from meshy.local.resources import BuildError, Resource
from meshy.local.shapes import HONOURED_ANNOTATIONS, name_problem
from meshy.local.tls import SECRET, ads_secret, any_san, tls_params

ORIGINATING = ("SIMPLE", "MUTUAL")
SYSTEM = "system"
ROOT_PREFIX, CERT_PREFIX, SEPARATOR = "file-root:", "file-cert:", "~"
# What Istio's agent takes for "system" (pkg/security/security.go GetOSRootFilePath at 1.30.3), in its order.
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
USER_VOLUME, USER_VOLUME_MOUNT = HONOURED_ANNOTATIONS
CERT_WAIT = "1s"


def check_origination(key: Any, path: str, tls: dict[str, Any]) -> None:
    """Refuse, at `path`, a SIMPLE or MUTUAL block that Istio would not turn into TLS, and the fields of
    origination under another mode (ISTIO_MUTUAL's SNI and names are Istio's own, locally)."""
    mode = tls.get("mode", "DISABLE")
    if mode not in ORIGINATING:
        extra = sorted(set(tls) - {"mode"})
        if extra:
            raise BuildError(
                f"{key}: field {path}.tls.{extra[0]} is not supported locally with mode {mode} "
                "(the local backend reads it for SIMPLE and MUTUAL); remove it"
            )
        return
    if tls["mode"] == "MUTUAL" and not (tls.get("clientCertificate") and tls.get("privateKey")):
        # Istio logs the error and sends the cluster's traffic in plaintext: refused rather than that.
        raise BuildError(f"{key}: {path}.tls mode MUTUAL needs clientCertificate and privateKey (file paths)")


def origination(tls: dict[str, Any], release: IstioRelease, service_names: tuple[str, ...] = ()) -> Origination:
    """The Envoy-side meaning of one SIMPLE or MUTUAL `tls` block (checked already), as `release` translates it.

    `service_names`: the subjectAltNames of the ServiceEntry the cluster leads to, which 1.28 and later
    check when the block names none (cluster_tls.go constructUpstreamTLS, provider.External); 1.8.6
    reads them for ISTIO_MUTUAL only.
    """
    # insecureSkipVerify is in the schema from 1.12 (release.FIELDS_SINCE refuses it before).
    skip = bool(tls.get("insecureSkipVerify", False))
    mutual = tls["mode"] == "MUTUAL"
    files = {"cert": tls.get("clientCertificate", ""), "key": tls.get("privateKey", "")} if mutual else {}
    sni, sans, ca = tls.get("sni", ""), tuple(tls.get("subjectAltNames", [])), tls.get("caCertificates", "")
    if not release.verifies_origination_by_default:
        return Origination(tls["mode"], sni, subject_alt_names=sans if ca else (), ca=ca, **files)
    auto_sni = not sni
    return Origination(
        tls["mode"],
        sni,
        auto_sni=auto_sni,
        # Decided on the block's own names, before the ServiceEntry's are taken (setAutoSniAndAutoSanValidation).
        auto_san=auto_sni and not sans and not skip,
        subject_alt_names=() if skip else (sans or service_names),
        ca="" if skip else (ca or SYSTEM),
        # defaultUpstreamCommonTLSContext: TLS 1.2 to 1.3.
        tls13=True,
        **files,
    )


def root_name(item: Origination) -> str:
    return ROOT_PREFIX + item.ca if item.ca else ""


def cert_name(item: Origination) -> str:
    return f"{CERT_PREFIX}{item.cert}{SEPARATOR}{item.key}" if item.cert else ""


def upstream_socket(item: Origination) -> dict[str, Any]:
    """The cluster's transport socket: Istio's UpstreamTlsContext for SIMPLE / MUTUAL."""
    common: dict[str, Any] = {"tls_params": tls_params()} if item.tls13 else {}
    if item.cert:
        # A client certificate the proxy lacks is never served (proxy_files). Istio's config leaves Envoy's
        # 15 s wait for it, after which the cluster is used without it and every handshake fails; here the
        # agent answers from the same push, so a short wait reaches that end at once.
        waiting = ads_secret(cert_name(item))
        waiting["sds_config"]["initial_fetch_timeout"] = CERT_WAIT
        common["tls_certificate_sds_secret_configs"] = [waiting]
    if item.ca:
        default: dict[str, Any] = {}
        if item.subject_alt_names:
            default["match_typed_subject_alt_names"] = any_san(item.subject_alt_names)
        common["combined_validation_context"] = {
            "default_validation_context": default,
            "validation_context_sds_secret_config": ads_secret(root_name(item)),
        }
    else:
        common["validation_context"] = {}
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common,
    }
    if item.sni:
        context["sni"] = item.sni
    return {"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": context}}


def upstream_options(item: Origination) -> dict[str, Any]:
    """The cluster's HTTP protocol options for auto SNI and auto SAN validation (1.28 and later)."""
    options = {"auto_sni": True} if item.auto_sni else {}
    if item.auto_san:
        options["auto_san_validation"] = True
    return {"upstream_http_protocol_options": options} if options else {}


def pod_mounts(deployment: Resource, annotations: Mapping[str, str]) -> tuple[Mount, ...]:
    """The Secret mounts the injector would add to istio-proxy from the pod template's annotations."""
    if USER_VOLUME not in annotations and USER_VOLUME_MOUNT not in annotations:
        return ()
    volumes, mounts = (_json_map(deployment, annotations, name) for name in (USER_VOLUME, USER_VOLUME_MOUNT))
    result: dict[str, Mount] = {}
    for name, mount in mounts.items():
        check_volume_name(deployment, name)
        volume = volumes.get(name)
        secret = volume.get("secret") if isinstance(volume, dict) else None
        if not isinstance(secret, dict) or not isinstance(secret.get("secretName", name), str):
            raise BuildError(
                f"{deployment.key}: {USER_VOLUME_MOUNT} {name!r} needs a Secret volume of that name in "
                f"{USER_VOLUME} (secretName a string); the local backend mounts only Secrets"
            )
        check_fields(deployment, name, {**volume, **secret}, VOLUME_FIELDS)
        check_fields(deployment, name, mount, MOUNT_FIELDS)
        path = mount_path(deployment, name, mount)
        if path in result:
            # Kubernetes refuses a container whose volume mounts share a mountPath.
            raise BuildError(f"{deployment.key}: {USER_VOLUME_MOUNT} {name!r} and {result[path].secret!r} "
                             f"both mount at {path}; give each its own mountPath")  # fmt: skip
        result[path] = Mount(path, secret.get("secretName", name))
    return tuple(result.values())


# What the local mount honours or leaves aside (README): the sidecar only reads, a missing Secret always
# leaves the directory empty (optional), and file modes are not modelled (defaultMode: in a pod a mode
# the proxy's user cannot read would hide the files from its agent).
VOLUME_FIELDS = frozenset({"secret", "secretName", "optional", "defaultMode"})
MOUNT_FIELDS = frozenset({"mountPath", "readOnly", "mountPropagation"})


# The injector's own volumes and istio-proxy's mounts at every release of the matrix (pkg/kube/inject/
# testdata/inject/user-volume.yaml.injected at 1.8.6, 1.28.10, 1.30.3): Kubernetes refuses a pod whose
# volumes share a name or whose container mounts share a path, so the pod would never start.
INJECTED_VOLUMES = frozenset({"istio-envoy", "istio-data", "istio-podinfo", "istio-token", "istiod-ca-cert"})
INJECTED_MOUNTS = frozenset(
    {"/etc/istio/proxy", "/var/lib/istio/data", "/etc/istio/pod", "/var/run/secrets/tokens", "/var/run/secrets/istio"}
)


def check_volume_name(deployment: Resource, name: str) -> None:
    problem = name_problem(name, "label")
    if problem or name in INJECTED_VOLUMES:
        reason = problem or "is a volume Istio's injector adds itself"
        raise BuildError(f"{deployment.key}: sidecar volume name {name!r} {reason}; choose another name")


def check_fields(deployment: Resource, name: str, spec: Any, known: frozenset[str]) -> None:
    """Refuse the volume and mount fields that would change what the sidecar sees (items, subPath, ...)."""
    extra = sorted(set(spec) - known) if isinstance(spec, dict) else []
    if extra:
        raise BuildError(
            f"{deployment.key}: sidecar volume {name!r}: field {extra[0]} is not supported locally (the whole "
            "Secret is mounted at mountPath, one file per key); remove it"
        )


def mount_path(deployment: Resource, name: str, mount: Any) -> str:
    """A mount's directory as the container runtime resolves it ('..' and repeated or trailing slashes
    folded), refused when it is no absolute directory below the root."""
    raw = mount.get("mountPath") if isinstance(mount, dict) else None
    if not isinstance(raw, str) or not raw.startswith("/") or not raw.isprintable():
        raise BuildError(f"{deployment.key}: {USER_VOLUME_MOUNT} {name!r} needs an absolute mountPath")
    path = folded(raw)
    if path in INJECTED_MOUNTS:
        raise BuildError(
            f"{deployment.key}: {USER_VOLUME_MOUNT} {name!r} mounts at {path}, where Istio's injector mounts its "
            "own volume; choose another directory"
        )
    if path == "/":
        raise BuildError(
            f"{deployment.key}: {USER_VOLUME_MOUNT} {name!r} mounts over the sidecar's root directory; "
            "choose a directory below it"
        )
    return path


def folded(path: str) -> str:
    # normpath keeps a leading "//" (POSIX leaves its meaning open); Linux reads it as "/".
    return "/" + posixpath.normpath(path).lstrip("/")


def _json_map(deployment: Resource, annotations: Mapping[str, str], name: str) -> dict[str, Any]:
    try:
        value = json.loads(annotations.get(name, "{}"))
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise BuildError(f"{deployment.key}: annotation {name} must be a JSON object of name -> volume (mount)")
    return value


def check_files(key: Any, tls: dict[str, Any], release: IstioRelease) -> None:
    """Refuse file fields a sidecar would read relative to its agent's working directory: only "system"
    (the agent's name for the OS roots from 1.28, security.go FileRootSystemCACert) is not a path."""
    for field in ("caCertificates", "clientCertificate", "privateKey"):
        value = tls.get(field, "")
        system = field == "caCertificates" and value == SYSTEM and release.verifies_origination_by_default
        if value and not value.startswith("/") and not system:
            raise BuildError(
                f"{key}: tls.{field} {value!r} is not an absolute path; name the file as the sidecar sees it "
                "(e.g. under a sidecar.istio.io/userVolumeMount directory)"
            )
        if SEPARATOR in value:
            # SdsCertificateConfigFromResourceName (pkg/security/security.go at 1.30.3, pilot/pkg/model/
            # authentication.go at 1.8.6) splits the SDS name at every "~": the agent never serves such a file.
            raise BuildError(
                f"{key}: tls.{field} {value!r} holds '~', which Istio's agent reads as the separator of "
                "certificate and key, so it never serves the file; rename the file"
            )


@dataclass(frozen=True)
class Found:
    """What a proxy finds at a path: a mounted Secret's text, or a file of this machine (its path)."""

    value: str
    on_disk: bool = False


Reader = Callable[[str], Found | None]


def file_reader(mounts: tuple[Mount, ...], secrets: Mapping[str, dict[str, Any]]) -> Reader:
    """What a proxy reads at a path: a mounted Secret's key, else this machine's file; None when absent.

    `secrets`: the Secrets of the pod's namespace, name -> spec.
    """

    def read(path: str) -> Found | None:
        if path == SYSTEM:
            # The agent takes the first bundle that exists in its container, a mounted one included.
            return next((found for bundle in SYSTEM_BUNDLES if (found := read(bundle))), None)
        if not path.startswith("/"):
            return Found(path, True) if os.path.isfile(path) else None
        path = folded(path)
        # The deepest mount holding the path is the one the sidecar sees there.
        holding = [mount for mount in mounts if path.startswith(mount.path + "/")]
        if holding:
            mount = max(holding, key=lambda item: len(item.path))
            if mount.secret not in secrets:
                return None
            value = decoded(secrets[mount.secret])[0].get(path[len(mount.path) + 1 :])
            return Found(value.decode(errors="replace")) if value is not None else None
        return Found(path, True) if os.path.isfile(path) else None

    return read


PEM_BEGIN, PEM_END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
# Enough for the first certificate of any bundle; the rest of a file is Envoy's to read.
PEM_HEAD = 64 * 1024


def served(found: Found | None) -> Found | None:
    """`found` if the agent serves it: its first PEM block parses as a certificate, as the agent checks
    before serving a file (secretcache.go generateRootCertFromExistingFile and
    generateKeyCertFromExistingFiles: nodeagentutil.ParseCertAndGetExpiryTimestamp at 1.8.6,
    pkiutil.ParseRootCerts at 1.30.3, which also serves the later blocks that parse when the first does not;
    here the first block decides)."""
    if found is None:
        return None
    try:
        with open(found.value, "rb") if found.on_disk else contextlib.nullcontext(None) as file:
            head = file.read(PEM_HEAD).decode("latin-1") if file else found.value[:PEM_HEAD]
    except OSError:
        return None
    start = head.find(PEM_BEGIN)
    end = head.find(PEM_END, start)
    if start < 0 or end < 0:
        return None
    # Imported here: building a mesh without originations needs no cryptography.
    from cryptography import x509

    try:
        x509.load_pem_x509_certificate(head[start : end + len(PEM_END)].encode("latin-1"))
    except ValueError:
        return None
    return found


def proxy_files(items: list[Origination], read: Reader) -> tuple[ProxyFile, ...]:
    """The files a proxy's agent can serve for these originations (absent ones are left out): a file that
    holds no certificate is not served, as a missing one."""
    found: dict[str, ProxyFile] = {}
    for item in items:
        if item.ca:
            ca = served(read(item.ca))
            found[root_name(item)] = (
                ProxyFile(root_name(item), ca=ca.value, on_disk=ca.on_disk)
                if ca
                else ProxyFile(root_name(item), absent=True)
            )
        if item.cert:
            chain, key = served(read(item.cert)), read(item.key)
            # One source for both, as one SDS resource holds them.
            if chain is not None and key is not None and chain.on_disk == key.on_disk:
                found[cert_name(item)] = ProxyFile(
                    cert_name(item), chain=chain.value, key=key.value, on_disk=chain.on_disk
                )
    return tuple(found.values())


def data_source(value: str, on_disk: bool) -> dict[str, str]:
    return {"filename": value} if on_disk else {"inline_string": value}


def file_secrets(files: tuple[ProxyFile, ...], mesh_root: str = "") -> list[dict[str, Any]]:
    """The proxy's SDS resources for its files; an absent CA file stands as `mesh_root`."""
    result = []
    for item in files:
        if item.absent:
            if mesh_root:
                context = {"trusted_ca": data_source(mesh_root, False)}
                result.append({"@type": SECRET, "name": item.name, "validation_context": context})
        elif item.ca:
            context = {"trusted_ca": data_source(item.ca, item.on_disk)}
            result.append({"@type": SECRET, "name": item.name, "validation_context": context})
        else:
            pair = {
                "certificate_chain": data_source(item.chain, item.on_disk),
                "private_key": data_source(item.key, item.on_disk),
            }
            result.append({"@type": SECRET, "name": item.name, "tls_certificate": pair})
    return result
