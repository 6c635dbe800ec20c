"""A small typed model of the mesh: what each proxy listens on, routes and calls.

Built from resources by build.py, turned into Envoy configuration by envoy.py.
Field names follow Istio's vocabulary; nothing here knows Envoy's JSON.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

# --- Workloads ---------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """A directory of a sidecar that holds a Secret's keys as files (sidecar.istio.io/userVolumeMount)."""

    path: str
    secret: str


@dataclass(frozen=True)
class Pod:
    """One replica of a Deployment: an app process and its sidecar share `ip`'s identity."""

    name: str
    namespace: str
    deployment: str
    labels: dict[str, str]
    ip: str  # the sidecar's address: what other proxies call
    app_ip: str  # where the app itself listens
    ports: tuple[int, ...]
    env: dict[str, str]
    image: str
    health_path: str | None
    service_account: str = "default"  # the pod template's serviceAccountName: its SPIFFE identity
    # The pod's security.istio.io/tlsMode label as Istio's injector sets it ("istio" unless the
    # template says otherwise): whether callers send it mutual TLS.
    tls_mode: str = "istio"
    mounts: tuple[Mount, ...] = ()  # Secrets mounted into its sidecar


@dataclass(frozen=True)
class GatewayPod:
    name: str
    namespace: str
    labels: dict[str, str]
    ip: str
    # Service port -> (address, port) its listener binds; the ingress gateway's
    # port 80 binds the user-facing address (127.0.0.1:8080 by default).
    bind: dict[int, tuple[str, int]]
    service_account: str = "default"


# --- Routing -------------------------------------------------------------------


@dataclass(frozen=True)
class StringMatch:
    kind: str  # exact | prefix | suffix | regex | present
    value: str


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    match: StringMatch
    invert: bool = False  # withoutHeaders
    missing_as_empty: bool = False  # an absent header is compared as "" (withoutHeaders from Istio 1.22)


@dataclass(frozen=True)
class Match:
    uri: StringMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[tuple[str, StringMatch], ...] = ()
    ignore_case: bool = False


@dataclass(frozen=True)
class HeaderOps:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class WeightedCluster:
    cluster: str
    weight: int
    # A destination's own header operations and authority (HTTPRouteDestination.headers).
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()
    authority: str | None = None


@dataclass(frozen=True)
class Retry:
    attempts: int
    retry_on: str
    status_codes: tuple[int, ...] = ()
    per_try_timeout: float | None = None
    previous_hosts: bool = True  # retry another host than the one that failed


@dataclass(frozen=True)
class Fault:
    delay: float | None = None
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True)
class Redirect:
    path: str | None = None
    host: str | None = None
    code: int = 301
    scheme: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class DirectResponse:
    status: int
    body: str | None = None
    base64: bool = False  # body holds base64 bytes (HTTPBody.bytes)


@dataclass(frozen=True)
class HashPolicy:
    """What a consistent-hash route hashes on: header | cookie | query | source_ip."""

    kind: str
    name: str = ""
    path: str | None = None  # cookie only
    ttl: float | None = None  # cookie only: Envoy sets the cookie when given


@dataclass(frozen=True)
class Mirror:
    cluster: str
    percent: float = 100.0
    shadow_suffix: bool = False  # the mirrored request's host gets "-shadow" appended


@dataclass(frozen=True)
class Cors:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None  # seconds
    allow_credentials: bool | None = None


@dataclass(frozen=True)
class Route:
    name: str
    match: Match
    clusters: tuple[WeightedCluster, ...] = ()
    redirect: Redirect | None = None
    direct: DirectResponse | None = None
    retry: Retry | None = None
    timeout: float = 0.0  # 0: no timeout, Istio's default
    fault: Fault | None = None
    mirrors: tuple[Mirror, ...] = ()
    hash_policies: tuple[HashPolicy, ...] = ()
    cors: Cors | None = None
    prefix_rewrite: str | None = None
    authority_rewrite: str | None = None
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()


@dataclass(frozen=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    # x-envoy-attempt-count to upstreams, as Istio's virtual hosts set it (IncludeRequestAttemptCount).
    attempt_count: bool = True


# --- Authorization (AuthorizationPolicy, as Envoy's RBAC filter enforces it) --------------


@dataclass(frozen=True)
class AuthzSource:
    """One `from.source`: every field set must match; a field matches when any of its values does."""

    principals: tuple[StringMatch, ...] = ()
    not_principals: tuple[StringMatch, ...] = ()
    namespaces: tuple[StringMatch, ...] = ()
    not_namespaces: tuple[StringMatch, ...] = ()
    request_principals: tuple[ClaimMatch, ...] = ()
    not_request_principals: tuple[ClaimMatch, ...] = ()


@dataclass(frozen=True)
class ClaimMatch:
    """A request principal (Istio's iss/sub) as the validated token's claims: issuer None means any issuer."""

    issuer: str | None
    subject: StringMatch | None = None  # None: any subject


@dataclass(frozen=True)
class AuthzOperation:
    """One `to.operation`, read as AuthzSource is."""

    paths: tuple[StringMatch, ...] = ()
    not_paths: tuple[StringMatch, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthzCondition:
    """One `when` on a request header (request.headers[NAME]), a principal or a namespace."""

    key: str  # header | principal | namespace | claim | request_principal
    header: str  # the header's name for key header, the claim's for key claim
    values: tuple[StringMatch, ...] = ()
    not_values: tuple[StringMatch, ...] = ()
    principals: tuple[ClaimMatch, ...] = ()  # key request_principal: values as token claims
    not_principals: tuple[ClaimMatch, ...] = ()


@dataclass(frozen=True)
class AuthzRule:
    """One rule of a policy: any source, any operation, and every condition (an absent part matches all)."""

    name: str  # ns[<namespace>]-policy[<name>]-rule[<index>], Istio's policy name in Envoy
    sources: tuple[AuthzSource, ...] | None = None  # None: from anyone
    operations: tuple[AuthzOperation, ...] | None = None  # None: any request
    conditions: tuple[AuthzCondition, ...] = ()
    never: bool = False  # a policy without rules: matches no request


@dataclass(frozen=True)
class Authz:
    """What a listener enforces: DENY rules first, then, if any ALLOW policy applies, only what one allows."""

    deny: tuple[AuthzRule, ...] = ()
    allow: tuple[AuthzRule, ...] | None = None  # None: no ALLOW policy applies (everything not denied passes)


@dataclass(frozen=True)
class JwtProvider:
    """One jwtRule of a RequestAuthentication that applies to the workload (Envoy's provider origins-<i>)."""

    issuer: str
    jwks: str
    audiences: tuple[str, ...] = ()
    from_headers: tuple[tuple[str, str], ...] = ()  # (name, value prefix)
    from_params: tuple[str, ...] = ()
    forward: bool = False
    payload_header: str = ""


@dataclass(frozen=True)
class ServerTls:
    """A Gateway server that terminates TLS (SIMPLE or MUTUAL): one filter chain of its port's listener."""

    name: str  # the filter chain's name
    sni_hosts: tuple[str, ...]  # empty: any server name
    credential: str  # the Secret named by credentialName (gateway's namespace)
    mutual: bool = False
    subject_alt_names: tuple[str, ...] = ()  # MUTUAL: what a client certificate must carry
    min_version: str | None = None  # Envoy's TLSv1_2 etc.; None: Envoy's default
    max_version: str | None = None
    cipher_suites: tuple[str, ...] = ()
    # The Secret's PEM text as the gateway receives it over SDS; part of the model so that a changed
    # Secret changes the proxy's digest and is pushed.
    chain: str = ""
    key: str = ""
    ca: str = ""  # MUTUAL only


@dataclass(frozen=True)
class SniRoute:
    """A Gateway PASSTHROUGH server's filter chain: connections whose SNI is one of these hosts go, still
    encrypted, to the clusters by weight (a VirtualService `tls` entry's match)."""

    name: str  # the filter chain's name
    sni_hosts: tuple[str, ...]  # empty: any server name (a match listing "*")
    clusters: tuple[WeightedCluster, ...]


@dataclass(frozen=True)
class Listener:
    name: str
    address: str
    port: int
    virtual_hosts: tuple[VirtualHost, ...]
    # Sidecar outbound: the app sends absolute-form requests (HTTP_PROXY).
    forward_proxy: bool = False
    # Gateways match hosts ignoring the Host header's port but leave the header as the client wrote it:
    # Istio 1.30.3 gateway.go sets IgnorePortInHostMatching; 1.8.6 adds a 'host:*' domain per host.
    strip_port: bool = False
    server_name: str | None = None  # the server response header; None: Envoy's own
    remote_address: bool = False  # the downstream peer is the client (gateways), not another proxy
    # A sidecar's inbound listener: its PeerAuthentication mode (PERMISSIVE, STRICT or DISABLE);
    # None for listeners that face the app or clients (outbound, gateways).
    peer_mode: str | None = None
    authz: Authz | None = None  # AuthorizationPolicies of the workload (inbound and gateway listeners)
    tls: tuple[ServerTls, ...] = ()  # a gateway port whose servers terminate TLS: one chain each
    jwt: tuple[JwtProvider, ...] = ()  # RequestAuthentication of the workload (inbound and gateway listeners)
    # A gateway's TCP server: connections proxied to these clusters by weight (no HTTP on this listener).
    tcp: tuple[WeightedCluster, ...] = ()
    # A gateway port's PASSTHROUGH servers: one chain per tls route match, beside the terminating ones.
    passthrough: tuple[SniRoute, ...] = ()


# --- Upstreams -------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    mtls: bool = False  # the caller speaks Istio mutual TLS to it (auto mTLS: it runs a sidecar)


@dataclass(frozen=True)
class CircuitBreaker:
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None


@dataclass(frozen=True)
class Outlier:
    consecutive_5xx: int | None = None
    consecutive_gateway: int | None = None
    interval: float | None = None
    base_ejection: float | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int = 0  # Envoy's healthy_panic_threshold; Istio sets 0 (no panic routing)


@dataclass(frozen=True)
class Origination:
    """TLS a proxy starts towards a server (DestinationRule tls SIMPLE or MUTUAL); see origination.py."""

    mode: str  # SIMPLE | MUTUAL
    sni: str = ""  # empty: none, or the request's host when auto_sni
    auto_sni: bool = False
    auto_san: bool = False  # the certificate must name the SNI
    subject_alt_names: tuple[str, ...] = ()
    ca: str = ""  # the file of the roots to check the server with; empty: no check
    cert: str = ""  # MUTUAL: files of the client certificate and key
    key: str = ""
    tls13: bool = False  # TLS 1.2 to 1.3 as Istio asks (1.28 on); else Envoy's client default, 1.2 only


@dataclass(frozen=True)
class ProxyFile:
    """A file a proxy's agent serves for an origination over SDS under `name`: PEM text from a mounted
    Secret, or (on_disk) the path of a file of this machine, which Envoy reads itself; a CA file the
    proxy does not have (absent) is served as the mesh's own root, which signed nothing outside."""

    name: str
    ca: str = ""
    chain: str = ""
    key: str = ""
    on_disk: bool = False
    absent: bool = False


@dataclass(frozen=True)
class Cluster:
    name: str
    endpoints: tuple[Endpoint, ...] = ()
    dns_name: str | None = None  # resolved by Envoy (STRICT_DNS) when set
    dns_port: int = 0
    lb: str = "LEAST_REQUEST"
    connect_timeout: float = 10.0
    circuit: CircuitBreaker | None = None
    outlier: Outlier | None = None
    max_requests_per_connection: int | None = None
    ring_size: int | None = None  # RING_HASH's minimum ring size
    idle_timeout: float | None = None  # upstream HTTP connections
    # none: plain; auto: mutual TLS to the endpoints marked mtls, plain to the rest (Istio's auto
    # mTLS); istio: mutual TLS to every endpoint (DestinationRule tls ISTIO_MUTUAL); origin: `origination`.
    tls: str = "none"
    sni: str | None = None
    peer_identities: tuple[str, ...] = ()  # SPIFFE ids the server's certificate must carry
    origination: Origination | None = None  # tls "origin": a DestinationRule's SIMPLE or MUTUAL


@dataclass(frozen=True)
class Proxy:
    name: str
    admin: Endpoint
    listeners: tuple[Listener, ...]
    clusters: tuple[Cluster, ...]
    identity: str | None = None  # the SPIFFE id of its certificate
    files: tuple[ProxyFile, ...] = ()  # what its agent read for its clusters' originations


@dataclass(frozen=True)
class Mesh:
    proxies: dict[str, Proxy] = field(default_factory=dict)


# --- As data (the golden tests pin the model on its own) ---------------------------


def to_data(value: Any) -> Any:
    """A model value as JSON-ready data: dataclasses as mappings, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_data(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_data(item) for key, item in value.items()}
    return value


def from_data(kind: Any, data: Any) -> Any:
    """The inverse of to_data for a model type such as Proxy."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{name: from_data(hints[name], item) for name, item in data.items()})
    if origin in (types.UnionType, typing.Union):
        if data is None:
            return None
        return from_data(next(a for a in args if a is not type(None)), data)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_data(args[0], item) for item in data)
        return tuple(from_data(a, item) for a, item in zip(args, data, strict=True))
    if origin is dict:
        return {from_data(args[0], key): from_data(args[1], item) for key, item in data.items()}
    if kind is int and isinstance(data, str):
        return int(data)  # mapping keys come back from JSON as text
    return data
