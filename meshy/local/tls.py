"""Mutual TLS in Envoy's v3 JSON: upstream and downstream contexts, the inbound filter chains, SDS secrets.

Shaped as Istio 1.30.3 generates them: pilot/pkg/networking/core/cluster_tls.go
(ISTIO_MUTUAL contexts, the tlsMode-istio / tlsMode-disabled transport socket
matches of auto mTLS), pilot/pkg/security/authn/utils/utils.go BuildInboundTLS
(client certificates required, ALPN h2 and http/1.1, TLS 1.2 to 1.3),
pilot/pkg/networking/core/filterchain_options.go (the tls / raw_buffer chains
of a PERMISSIVE inbound listener), and listener_inbound.go with
util/proxy_headers.go (X-Forwarded-Client-Cert: APPEND_FORWARD with subject,
URI and DNS of the caller's certificate; the same at 1.8.6, v1alpha3/listener.go,
whose util.go has the same in-mesh ALPN). Gateway listeners keep Envoy's
default, SANITIZE: their clients hold no certificate, where Istio's
SANITIZE_SET would add nothing either (gateway.go).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshy.local.model import Cluster, Endpoint, Listener

if TYPE_CHECKING:  # identity.py loads cryptography, which what only renders Envoy JSON does not need
    from meshy.local.identity import KeyPair

UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
RAW_BUFFER = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
TLS_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# SDS resource names of the workload certificate and the root (security/pkg/model SDSDefaultResourceName, SDSRootResourceName).
CERTIFICATE = "default"
ROOT = "ROOTCA"
# util.go ALPNInMeshWithMxc: what a sidecar offers to another; the inbound chain matches on it.
ALPN_IN_MESH = ["istio-peer-exchange", "istio"]
ALPN_HTTP = ["h2", "http/1.1"]  # util.go ALPNHttp: the inbound side's own list
MATCH_KEY = "envoy.transport_socket_match"
MUTUAL_MODES = ("PERMISSIVE", "STRICT")


def ads_secret(name: str) -> dict[str, Any]:
    return {"name": name, "sds_config": {"ads": {}, "resource_api_version": "V3"}}


def tls_params() -> dict[str, Any]:
    return {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}


def any_san(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Envoy's typed SAN matchers for Istio's untyped exact ones (util.StringToExactMatch checks a name
    whatever its SAN type): each name as a DNS or a URI SAN."""
    return [{"san_type": kind, "matcher": {"exact": name}} for name in names for kind in ("DNS", "URI")]


def validation(identities: tuple[str, ...]) -> dict[str, Any]:
    """The root over SDS, and (upstream) the peer's SPIFFE ids as URI SANs."""
    default: dict[str, Any] = {}
    if identities:
        # Istio 1.30.3 writes match_subject_alt_names; Envoy 1.40 deprecates it for the typed form.
        default["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": identity}} for identity in identities
        ]
    return {
        "combined_validation_context": {
            "default_validation_context": default,
            "validation_context_sds_secret_config": ads_secret(ROOT),
        }
    }


def upstream_socket(item: Cluster) -> dict[str, Any]:
    context = {
        "@type": UPSTREAM,
        "sni": item.sni,
        "common_tls_context": {
            "tls_params": tls_params(),
            "alpn_protocols": ALPN_IN_MESH,
            "tls_certificate_sds_secret_configs": [ads_secret(CERTIFICATE)],
            **validation(item.peer_identities),
        },
    }
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def cluster_transport(item: Cluster) -> dict[str, Any]:
    """The cluster fields of its TLS mode: one socket (istio) or Istio's two socket matches (auto)."""
    if item.tls == "istio":
        return {"transport_socket": upstream_socket(item)}

    if item.tls == "auto":
        return {
            "transport_socket_matches": [
                {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": upstream_socket(item)},
                {
                    "name": "tlsMode-disabled",
                    "match": {},
                    "transport_socket": {
                        "name": "envoy.transport_sockets.raw_buffer",
                        "typed_config": {"@type": RAW_BUFFER},
                    },
                },
            ]
        }
    return {}


def endpoint_metadata(endpoint: Endpoint, item: Cluster) -> dict[str, Any]:
    """Marks an endpoint for the tlsMode-istio match (EDS's istio label on injected pods)."""
    if item.tls != "auto" or not endpoint.mtls:
        return {}
    return {"metadata": {"filter_metadata": {MATCH_KEY: {"tlsMode": "istio"}}}}


def downstream_socket() -> dict[str, Any]:
    context = {
        "@type": DOWNSTREAM,
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_params": tls_params(),
            "alpn_protocols": ALPN_HTTP,
            "tls_certificate_sds_secret_configs": [ads_secret(CERTIFICATE)],
            **validation(()),
        },
    }
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def inbound_chains(item: Listener, filters: list[dict[str, Any]]) -> dict[str, Any]:
    """The listener fields for its peer mode: a mutual TLS chain, and a plaintext one unless STRICT.

    Without a matching chain (plaintext under STRICT) Envoy closes the connection.
    """
    if item.peer_mode not in MUTUAL_MODES:
        return {"filter_chains": [{"filters": filters}]}
    chains = [
        {
            "name": "mtls",
            "filter_chain_match": {"transport_protocol": "tls", "application_protocols": ALPN_IN_MESH},
            "transport_socket": downstream_socket(),
            "filters": filters,
        }
    ]
    if item.peer_mode == "PERMISSIVE":
        chains.append(
            {"name": "plaintext", "filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": filters}
        )
    return {
        "listener_filters": [inspector()],
        "filter_chains": chains,
    }


def inspector() -> dict[str, Any]:
    """The listener filter that reads a connection's TLS ClientHello (SNI, ALPN) for filter chain matching."""
    return {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR}}


def client_cert_options(item: Listener) -> dict[str, Any]:
    """X-Forwarded-Client-Cert on a sidecar's inbound side, as Istio's defaults set it."""
    if item.peer_mode is None:
        return {}
    return {
        "forward_client_cert_details": "APPEND_FORWARD",
        "set_current_client_cert_details": {"subject": True, "uri": True, "dns": True},
    }


def uses_secrets(clusters: list[dict[str, Any]], listeners: list[dict[str, Any]]) -> bool:
    """Whether a proxy's configuration names the SDS secrets (else it never asks for them)."""
    return any("transport_socket" in c or "transport_socket_matches" in c for c in clusters) or any(
        "transport_socket" in chain for item in listeners for chain in item.get("filter_chains", [])
    )


def secrets(pair: KeyPair, root: str) -> list[dict[str, Any]]:
    """The proxy's two SDS resources: its certificate and key, and the mesh's root to check peers with."""
    return [
        {
            "@type": SECRET,
            "name": CERTIFICATE,
            "tls_certificate": {
                "certificate_chain": {"inline_string": pair.chain},
                "private_key": {"inline_string": pair.key},
            },
        },
        {"@type": SECRET, "name": ROOT, "validation_context": {"trusted_ca": {"inline_string": root}}},
    ]
