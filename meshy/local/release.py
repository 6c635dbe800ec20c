"""What changes with the Istio release: served API versions, validation rules, translation details.

Each rule names the upstream file (github.com/istio/istio at the matrix's tags
1.8.6, 1.28.10 and 1.30.3) it was read from.
"""

from __future__ import annotations

from dataclasses import dataclass

API_GROUP = "networking.istio.io"


def _minor(version: str) -> int:
    parts = version.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


@dataclass(frozen=True)
class IstioRelease:
    """The behaviour of one Istio minor release, as the local backend reproduces it."""

    version: str  # "1.8", "1.30", ...

    @property
    def minor(self) -> int:
        return _minor(self.version)

    @property
    def api_versions(self) -> tuple[str, ...]:
        # networking.istio.io/v1 is served from Istio 1.22 (manifests/charts/base/files/crd-all.gen.yaml).
        versions = ["v1alpha3", "v1beta1"] + (["v1"] if self.minor >= 22 else [])
        return tuple(f"{API_GROUP}/{v}" for v in versions)

    @property
    def security_api_versions(self) -> tuple[str, ...]:
        # security.istio.io/v1 is served from Istio 1.22 as well (the same CRD file at 1.22.8; 1.8.6: v1beta1 only).
        return ("security.istio.io/v1beta1",) + (("security.istio.io/v1",) if self.minor >= 22 else ())

    def serves(self, kind: str, dotted: str) -> bool:
        """Whether this release's schema has a field ('spec.http.mirrors' of a VirtualService)."""
        return self.minor >= since(kind, dotted)

    @property
    def relative_weights(self) -> bool:
        # 1.8.6 pkg/config/validation/validation.go validateHTTPRouteDestinations: "total destination
        # weight != 100"; from 1.15 weights are relative and only a total of 0 is refused.
        return self.minor >= 15

    @property
    def authority_header_rewrite(self) -> bool:
        # From 1.10, route.go translateHeadersOperations turns a set/add of ':authority' (or 'host')
        # into host_rewrite_literal; 1.8.6 passes it to Envoy as a header, which Envoy rejects.
        return self.minor >= 10

    @property
    def shadow_host_suffix(self) -> bool:
        # Envoy appends "-shadow" to a mirrored request's host; from 1.28 Istio turns that off
        # (pilot/pkg/features/pilot.go DISABLE_SHADOW_HOST_SUFFIX, default true).
        return self.minor < 28

    @property
    def regex_program_limit(self) -> int:
        # The re2.max_program_size.error_level Istio's bootstrap gives Envoy: 1024 in 1.8.6
        # (tools/packaging/common/envoy_bootstrap.json), 32768 in 1.28.10 and 1.30.3 (pkg/bootstrap/config.go).
        return 1024 if self.minor <= 10 else 32768

    @property
    def default_retry_status_codes(self) -> tuple[int, ...]:
        # retry.go DefaultPolicy retries 503 responses up to 1.26 (RetriableStatusCodes); 1.28.10 has none.
        return (503,) if self.minor <= 26 else ()

    @property
    def adds_retriable_status_codes(self) -> bool:
        # From 1.12 ConvertPolicy adds "retriable-status-codes" when retryOn lists codes without it;
        # 1.8.6 does not, so such codes are never retried.
        return self.minor >= 12

    @property
    def verifies_origination_by_default(self) -> bool:
        # DestinationRule tls SIMPLE/MUTUAL: 1.8.6 checks the server only against caCertificates and sets
        # no SNI of its own (v1alpha3/cluster.go); 1.28.10 and 1.30.3 check against the system roots by
        # default, with auto_sni and auto_san_validation (cluster_tls.go). See origination.py.
        return self.minor >= 28

    @property
    def query_prefix_match(self) -> bool:
        # route.go translateQueryParamMatch knows only exact and regex up to 1.17 (1.8.6 included): a
        # prefix leaves Envoy's matcher unset, which Envoy reads as "present"; 1.18 on translates it.
        return self.minor >= 18

    @property
    def catch_all_regex(self) -> str:
        # route.go isCatchAllRoute: regex "*" in 1.8.6, ".*" in 1.28.10 and 1.30.3 (only these are checked).
        return "*" if self.minor <= 8 else ".*"


# Fields of networking.istio.io that older releases do not serve, with the first minor release
# that does (their CRD schemas, manifests/charts/base/.../crd-all.gen.yaml at each tag).
FIELDS_SINCE = {
    "VirtualService spec.http.redirect.scheme": 12,
    "VirtualService spec.http.redirect.port": 12,
    "VirtualService spec.http.redirect.derivePort": 12,
    "VirtualService spec.http.directResponse": 15,
    "VirtualService spec.http.mirrors": 19,
    # ClientTLSSettings.insecure_skip_verify: istio/api networking/v1alpha3/destination_rule.proto from 1.12.
    **{
        f"DestinationRule spec.{policy}tls.insecureSkipVerify": 12
        for policy in (
            "trafficPolicy.",
            "trafficPolicy.portLevelSettings.",
            "subsets.trafficPolicy.",
            "subsets.trafficPolicy.portLevelSettings.",
        )
    },
}


def since(kind: str, dotted: str) -> int:
    """The first minor release serving a field: the newest of its own and its parents'."""
    parts = dotted.split(".")
    prefixes = (".".join(parts[:end]) for end in range(2, len(parts) + 1))
    return max(FIELDS_SINCE.get(f"{kind} {prefix}", 0) for prefix in prefixes)


def release_of(istio: str) -> IstioRelease:
    """The release for an Istio version such as 1.8, 1.8.6 or 1.30.3."""
    major_minor = ".".join(istio.split(".")[:2])
    return IstioRelease(major_minor)


# The newest release of the matrix (manifests/matrix.yaml); what a mesh without a stored pair behaves as.
DEFAULT_RELEASE = IstioRelease("1.30")
