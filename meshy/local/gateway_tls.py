"""Gateway servers that terminate TLS: Istio's ServerTLSSettings into the model, and the model into Envoy's JSON.

Istio 1.30.3, pilot/pkg/model/gateway.go: a server with `tls` gets a filter
chain matched by SNI on its hosts (the namespace part dropped), and a second
TLS server repeating a host on the same port is rejected;
pilot/pkg/networking/core/gateway.go and listener.go BuildListenerTLSContext:
ALPN h2 and http/1.1, client certificates required for MUTUAL, the
certificate over SDS named after credentialName and the CA as
`<credentialName>-cacert` (pilot/pkg/security/model/authentication.go
ApplyCredentialSDSToServerCommonTLSContext), min/max versions and cipher
suites only when set, and XFCC SANITIZE_SET with subject, cert, DNS and URI on
gateways. The Secrets are checked and read by credentials.py.

Difference, named in the README: Istio gives each HTTPS server its own route
configuration; here the servers of one port share the port's routes, so a
request whose Host belongs to another server of the same port is routed
instead of answered 404.
"""

from __future__ import annotations

from typing import Any

from meshy.local.credentials import CA_SUFFIX, CredentialError, ca_certificates, server_credential
from meshy.local.model import Listener, ServerTls
from meshy.local.resources import BuildError, Resource, ResourceSet
from meshy.local.tls import ALPN_HTTP, DOWNSTREAM, SECRET, ads_secret, any_san, inspector

SDS_PREFIX = "kubernetes://"  # Istio's credentials.KubernetesSecretType prefix of gateway SDS names
TLS_VERSIONS = {"TLSV1_0": "TLSv1_0", "TLSV1_1": "TLSv1_1", "TLSV1_2": "TLSv1_2", "TLSV1_3": "TLSv1_3"}
SUPPORTED_MODES = ("SIMPLE", "MUTUAL")  # PASSTHROUGH: passthrough.py


def gateway_secrets(resources: ResourceSet, namespace: str) -> dict[str, dict[str, Any]]:
    """The Secrets a gateway in `namespace` can name (Istio reads credentials from the gateway's own namespace)."""
    return {r.name: r.spec for r in resources.of_kind("Secret") if r.namespace == namespace}


def server_tls(
    gateway: Resource, index: int, server: dict[str, Any], secrets: dict[str, dict[str, Any]]
) -> ServerTls | None:
    """The TLS a Gateway server terminates, or None for a plaintext server; refusals name the server."""
    where = f"Gateway {gateway.namespace}/{gateway.name} spec.servers[{index}]"
    protocol = server["port"]["protocol"].upper()
    settings = server.get("tls")
    if settings is None:
        if protocol in ("HTTPS", "TLS"):
            raise BuildError(f"{where}: protocol {protocol} needs tls settings, as Istio's validation says; add tls")
        return None
    mode = settings.get("mode", "PASSTHROUGH")
    if mode not in SUPPORTED_MODES:
        raise BuildError(
            f"{where}: tls.mode {mode} is not supported locally (supported: SIMPLE, MUTUAL, PASSTHROUGH); "
            "use one of them or run this Gateway on kind"
        )
    if protocol != "HTTPS":
        raise BuildError(f"{where}: tls settings need protocol HTTPS locally; set port.protocol to HTTPS")
    credential = settings.get("credentialName")
    if not credential:
        raise BuildError(f"{where}: tls.mode {mode} needs tls.credentialName naming a Secret with the certificate")
    try:
        pair = server_credential(secrets, credential)
        ca = ca_certificates(secrets, credential) if mode == "MUTUAL" else ""
    except CredentialError as error:
        raise BuildError(
            f"{where}: tls.credentialName {credential} {error} in namespace of the gateway; apply the Secret first"
        ) from None
    alt_names = tuple(settings.get("subjectAltNames", ()))
    if alt_names and mode != "MUTUAL":
        raise BuildError(f"{where}: tls.subjectAltNames checks client certificates, which only MUTUAL asks for")
    low, high = settings.get("minProtocolVersion", "TLS_AUTO"), settings.get("maxProtocolVersion", "TLS_AUTO")
    if "TLS_AUTO" not in (low, high) and low > high:
        raise BuildError(f"{where}: tls.minProtocolVersion {low} is above maxProtocolVersion {high}; swap them")
    hosts = sorted({host.split("/", 1)[-1] for host in server["hosts"]})
    return ServerTls(
        name=f"{server['port']['number']}.{index}.{gateway.namespace}.{gateway.name}",
        sni_hosts=() if "*" in hosts else tuple(hosts),
        credential=credential,
        mutual=mode == "MUTUAL",
        subject_alt_names=alt_names,
        min_version=TLS_VERSIONS.get(low),
        max_version=TLS_VERSIONS.get(high),
        cipher_suites=tuple(settings.get("cipherSuites", ())),
        chain=pair.chain,
        key=pair.key,
        ca=ca,
    )


def check_port(port: int, plain: bool, tls: list[tuple[str, ...]]) -> None:
    """One port serves plaintext or TLS, and no two TLS servers (terminating or PASSTHROUGH, each given by
    its server names, empty for any) claim the same name (model/gateway.go CheckDuplicates)."""
    if plain and tls:
        raise BuildError(
            f"Gateway port {port} has both plaintext and TLS servers; Istio cannot merge them - move one to another port"
        )
    seen: set[str] = set()
    for sni_hosts in tls:
        names = sni_hosts or ("*",)
        repeated = seen.intersection(names)
        if repeated:
            raise BuildError(
                f"Gateway port {port}: host {sorted(repeated)[0]} is served by two TLS servers, which Istio rejects; "
                "keep it on one server"
            )
        seen.update(names)


# --- Envoy ----------------------------------------------------------------------------


def sds(name: str) -> dict[str, Any]:
    return ads_secret(SDS_PREFIX + name)


def downstream_socket(item: ServerTls) -> dict[str, Any]:
    common: dict[str, Any] = {"alpn_protocols": ALPN_HTTP, "tls_certificate_sds_secret_configs": [sds(item.credential)]}
    params = {
        key: value
        for key, value in (
            ("tls_minimum_protocol_version", item.min_version),
            ("tls_maximum_protocol_version", item.max_version),
        )
        if value
    }
    if item.cipher_suites:
        params["cipher_suites"] = list(item.cipher_suites)
    if params:
        common["tls_params"] = params
    if item.mutual:
        default: dict[str, Any] = {}
        if item.subject_alt_names:
            default["match_typed_subject_alt_names"] = any_san(item.subject_alt_names)
        common["combined_validation_context"] = {
            "default_validation_context": default,
            "validation_context_sds_secret_config": sds(item.credential + CA_SUFFIX),
        }
    context = {"@type": DOWNSTREAM, "require_client_certificate": item.mutual, "common_tls_context": common}
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def filter_chains(item: Listener, filters: list[dict[str, Any]]) -> dict[str, Any]:
    """The listener fields of a TLS gateway port: the TLS inspector, one chain per server matched by SNI."""
    chains = []
    for server in item.tls:
        chain: dict[str, Any] = {"name": server.name}
        if server.sni_hosts:
            chain["filter_chain_match"] = {"server_names": list(server.sni_hosts)}
        chains.append({**chain, "transport_socket": downstream_socket(server), "filters": filters})
    return {"listener_filters": [inspector()], "filter_chains": chains}


def client_cert_options() -> dict[str, Any]:
    """What a gateway's connection manager does with client certificates (gateway.go buildGatewayConnectionManager)."""
    return {
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"subject": True, "cert": True, "dns": True, "uri": True},
    }


def credential_secrets(listeners: tuple[Listener, ...]) -> list[dict[str, Any]]:
    """The SDS resources the TLS servers of these listeners name."""
    found: dict[str, dict[str, Any]] = {}
    for listener in listeners:
        for server in listener.tls:
            name = SDS_PREFIX + server.credential
            found[name] = {
                "@type": SECRET,
                "name": name,
                "tls_certificate": {
                    "certificate_chain": {"inline_string": server.chain},
                    "private_key": {"inline_string": server.key},
                },
            }
            if server.mutual:
                found[name + CA_SUFFIX] = {
                    "@type": SECRET,
                    "name": name + CA_SUFFIX,
                    "validation_context": {"trusted_ca": {"inline_string": server.ca}},
                }
    return list(found.values())
