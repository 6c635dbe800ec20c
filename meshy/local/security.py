"""Peer authentication and auto mTLS: which connections are mutual TLS, following Istio's semantics.

Pure, like build.py. Read from istio/istio at 1.30.3 (the same rules hold at
1.8.6 and 1.28.10 for what is accepted here):
- pilot/pkg/security/authn/policy_applier.go ComposePeerAuthentication: the
  oldest mesh-wide (root namespace, no selector), namespace and workload
  policies compose in that order, UNSET inheriting; PERMISSIVE when none is set;
- pilot/pkg/xds/endpoints/mtls_checker.go: a DestinationRule tls mode decides
  alone (the merged policy of util.go MergeSubsetTrafficPolicy, as the cluster's
  transport socket follows it); otherwise an endpoint gets mutual TLS when its pod carries a sidecar
  (label security.istio.io/tlsMode "istio") and its peer mode is not DISABLE;
- pilot/pkg/networking/core/cluster_tls.go buildUpstreamTLSSettings: auto mTLS
  only for hosts inside the mesh, SNI the cluster name, SANs the service's
  accounts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from meshy.local.jwt import claim_matches, providers_of
from meshy.local.model import (
    Authz,
    AuthzCondition,
    AuthzOperation,
    AuthzRule,
    AuthzSource,
    ClaimMatch,
    GatewayPod,
    JwtProvider,
    Pod,
    StringMatch,
)
from meshy.local.resources import BuildError, Resource, ResourceSet
from meshy.local.shapes import plain
from meshy.local.spiffe import GATEWAY_ACCOUNTS, spiffe_id

ROOT_NAMESPACE = "istio-system"  # meshConfig.rootNamespace's default
DEFAULT_MODE = "PERMISSIVE"
TLS_MODE_LABEL = "security.istio.io/tlsMode"
# DestinationRule tls modes the local backend honours; the others need certificates of the user's.
SUPPORTED_CLIENT_TLS = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")


def pod_identity(pod: Pod) -> str:
    return spiffe_id(pod.namespace, pod.service_account)


def gateway_identity(gateway: GatewayPod) -> str:
    return spiffe_id(gateway.namespace, GATEWAY_ACCOUNTS.get(gateway.name, gateway.service_account))


@dataclass(frozen=True)
class PeerPolicies:
    """PeerAuthentications by scope: mesh-wide, per namespace, and those with a workload selector."""

    mesh: Resource | None = None
    namespaces: dict[str, Resource] = field(default_factory=dict)
    workloads: tuple[Resource, ...] = ()


def peer_policies(resources: ResourceSet) -> PeerPolicies:
    """The applied PeerAuthentications, refusing what Istio would ignore (a second policy of one scope)."""
    mesh: Resource | None = None
    namespaces: dict[str, Resource] = {}
    workloads = []
    for policy in resources.of_kind("PeerAuthentication"):
        selector = (policy.spec.get("selector") or {}).get("matchLabels") or {}
        if policy.spec.get("portLevelMtls") and not selector:
            # Istio's validation (pkg/config/validation: ValidatePeerAuthentication) refuses it too.
            raise BuildError(f"{policy.key}: spec.portLevelMtls needs spec.selector; add a workload selector")
        if selector:
            if policy.namespace == ROOT_NAMESPACE:
                raise BuildError(
                    f"{policy.key}: a selector in the root namespace {ROOT_NAMESPACE} selects no workload "
                    "(Istio ignores such a policy); drop the selector for a mesh-wide policy"
                )
            workloads.append(policy)
            continue
        held = mesh if policy.namespace == ROOT_NAMESPACE else namespaces.get(policy.namespace)
        if held is not None:
            # Istio would apply only the oldest of the two; refuse rather than ignore one.
            scope = "the mesh" if policy.namespace == ROOT_NAMESPACE else f"namespace {policy.namespace}"
            raise BuildError(f"{policy.key}: {held.key} already sets peer authentication for {scope}; merge them")
        if policy.namespace == ROOT_NAMESPACE:
            mesh = policy
        else:
            namespaces[policy.namespace] = policy
    return PeerPolicies(mesh, namespaces, tuple(workloads))


def mode_of(mtls: dict[str, Any] | None) -> str | None:
    """A PeerAuthentication mtls setting's mode; None when UNSET (inherit)."""
    mode = (mtls or {}).get("mode") or "UNSET"
    return None if mode == "UNSET" else mode


def policy_mode(policy: Resource | None) -> str | None:
    return mode_of(policy.spec.get("mtls")) if policy else None


def workload_policy(policies: PeerPolicies, namespace: str, labels: dict[str, str]) -> Resource | None:
    chosen = [
        p
        for p in policies.workloads
        if p.namespace == namespace and p.spec["selector"]["matchLabels"].items() <= labels.items()
    ]
    if len(chosen) > 1:
        raise BuildError(
            f"{chosen[1].key}: {chosen[0].key} already selects the same workload; Istio would apply only the "
            "oldest, so make their selectors distinct or merge them"
        )
    return chosen[0] if chosen else None


def peer_mode(policies: PeerPolicies, namespace: str, labels: dict[str, str], port: int) -> str:
    """The mTLS mode a workload's sidecar enforces on one container port."""
    mode = DEFAULT_MODE
    for policy in (policies.mesh, policies.namespaces.get(namespace)):
        mode = policy_mode(policy) or mode
    workload = workload_policy(policies, namespace, labels)
    mode = policy_mode(workload) or mode
    if workload is not None:
        for number, setting in (workload.spec.get("portLevelMtls") or {}).items():
            if int(number) == port:
                mode = mode_of(setting) or mode
    return mode


def check_client_tls(key: Any, path: str, policy: dict[str, Any]) -> None:
    """Refuse by name a DestinationRule tls mode the local backend cannot honour (one traffic policy at `path`)."""
    mode = (policy.get("tls") or {}).get("mode", "DISABLE")
    if "tls" in policy and mode not in SUPPORTED_CLIENT_TLS:
        raise BuildError(
            f"{key}: {path}.tls.mode {mode} is not supported by the local backend yet; "
            f"use {' or '.join(SUPPORTED_CLIENT_TLS)}"
        )


def endpoint_mtls(policies: PeerPolicies, pod: Pod | None, port: int, dr_mode: str | None) -> bool:
    """Whether a caller speaks mutual TLS to one endpoint (mtls_checker.go checkMtlsEnabled)."""
    if dr_mode is not None:
        return dr_mode == "ISTIO_MUTUAL"
    if pod is None or pod.tls_mode != "istio":
        return False
    return peer_mode(policies, pod.namespace, pod.labels, port) != "DISABLE"


# --- AuthorizationPolicy ---------------------------------------------------------------
# pilot/pkg/security/authz/builder/builder.go and model/generator.go at 1.30.3: a policy in the root
# namespace applies mesh-wide, one elsewhere to its namespace; a selector narrows either to matching
# workloads. Each rule becomes an Envoy RBAC policy named ns[NS]-policy[NAME]-rule[I]; a policy
# without rules gets one that never matches. DENY policies are enforced before ALLOW ones.

SUPPORTED_ACTIONS = ("ALLOW", "DENY")
HEADER_KEY = re.compile(r"^request\.headers\[([^\]]+)\]$")
CLAIM_KEY = re.compile(r"^request\.auth\.claims\[([^\]\[.]+)\]$")  # one claim, not a nested path
CONDITION_KEYS = {
    "source.principal": "principal",
    "source.namespace": "namespace",
    "request.auth.principal": "request_principal",
}


def istio_match(value: str, prefix: str = "") -> StringMatch:
    """An Istio string with '*' wildcards as Envoy matches it (authz/matcher/string.go StringMatcherWithPrefix)."""
    if value == "*":
        return StringMatch("regex", ".+")
    if value.startswith("*"):
        rest = value[1:]
        return StringMatch("regex", prefix + ".*" + re.escape(rest)) if prefix else StringMatch("suffix", rest)
    if value.endswith("*"):
        return StringMatch("prefix", prefix + value[:-1])
    return StringMatch("exact", prefix + value)


def namespace_match(value: str) -> StringMatch:
    # generator.go srcNamespaceGenerator: the principal's /ns/<namespace>/ segment.
    if value == "*":
        return StringMatch("regex", ".+")
    pattern = re.escape(value).replace(r"\*", ".*")
    return StringMatch("regex", f".*/ns/{pattern}/.*")


def principal_matches(values: list[str]) -> tuple[StringMatch, ...]:
    return tuple(istio_match(v, "spiffe://") for v in values)


def authz_source(source: dict[str, Any], issuers: tuple[str, ...]) -> AuthzSource:
    def request_principals(values: list[str]) -> tuple[ClaimMatch, ...]:
        return tuple(match for value in values for match in claim_matches(value, issuers))

    return AuthzSource(
        request_principals=request_principals(source.get("requestPrincipals") or []),
        not_request_principals=request_principals(source.get("notRequestPrincipals") or []),
        principals=principal_matches(source.get("principals") or []),
        not_principals=principal_matches(source.get("notPrincipals") or []),
        namespaces=tuple(namespace_match(v) for v in source.get("namespaces") or []),
        not_namespaces=tuple(namespace_match(v) for v in source.get("notNamespaces") or []),
    )


def authz_operation(operation: dict[str, Any]) -> AuthzOperation:
    return AuthzOperation(
        paths=tuple(istio_match(v) for v in operation.get("paths") or []),
        not_paths=tuple(istio_match(v) for v in operation.get("notPaths") or []),
        methods=tuple(operation.get("methods") or []),
        not_methods=tuple(operation.get("notMethods") or []),
    )


def authz_condition(policy: Resource, index: int, when: dict[str, Any], issuers: tuple[str, ...]) -> AuthzCondition:
    key = when["key"]
    header = HEADER_KEY.match(key) or CLAIM_KEY.match(key)
    kind = ("claim" if key.startswith("request.auth") else "header") if header else CONDITION_KEYS.get(key)
    if kind is None:
        raise BuildError(
            f"{policy.key}: spec.rules[{index}].when key {plain(key)} is not supported by the local backend; "
            "use request.headers[NAME], request.auth.claims[NAME], request.auth.principal, source.principal "
            "or source.namespace"
        )
    if kind == "request_principal":
        return AuthzCondition(
            kind,
            "",
            principals=tuple(m for v in when.get("values") or [] for m in claim_matches(v, issuers)),
            not_principals=tuple(m for v in when.get("notValues") or [] for m in claim_matches(v, issuers)),
        )

    def matches(values: list[str]) -> tuple[StringMatch, ...]:
        if kind == "principal":
            return principal_matches(values)
        if kind == "namespace":
            return tuple(namespace_match(v) for v in values)
        return tuple(istio_match(v) for v in values)

    return AuthzCondition(
        kind, header.group(1) if header else "", matches(when.get("values") or []), matches(when.get("notValues") or [])
    )


def authz_rules(policy: Resource, issuers: tuple[str, ...] = ()) -> tuple[AuthzRule, ...]:
    """The policy's rules; `issuers`: those the workload's RequestAuthentications accept (request principals)."""
    name = f"ns[{policy.namespace}]-policy[{policy.name}]-rule"
    rules = policy.spec.get("rules") or []
    if not rules:
        return (AuthzRule(f"{name}[0]", never=True),)
    result = []
    for index, rule in enumerate(rules):
        sources = rule.get("from")
        operations = rule.get("to")
        result.append(
            AuthzRule(
                f"{name}[{index}]",
                tuple(authz_source(s.get("source") or {}, issuers) for s in sources) if sources else None,
                tuple(authz_operation(o.get("operation") or {}) for o in operations) if operations else None,
                tuple(authz_condition(policy, index, w, issuers) for w in rule.get("when") or []),
            )
        )
    return tuple(result)


def check_authorization(resources: ResourceSet) -> None:
    """Refuse by name what the local backend cannot enforce (every rule is built here once)."""
    for policy in resources.of_kind("AuthorizationPolicy"):
        action = policy.spec.get("action", "ALLOW")
        if action not in SUPPORTED_ACTIONS:
            raise BuildError(
                f"{policy.key}: spec.action {action} is not supported by the local backend yet; use ALLOW or DENY"
            )
        authz_rules(policy)


def applies_to(policy: Resource, namespace: str, labels: dict[str, str]) -> bool:
    """Whether a policy in the root namespace or the workload's, with no selector or a matching one, applies."""
    selector = (policy.spec.get("selector") or {}).get("matchLabels") or {}
    return policy.namespace in (namespace, ROOT_NAMESPACE) and selector.items() <= labels.items()


def workload_jwt(resources: ResourceSet, namespace: str, labels: dict[str, str]) -> tuple[JwtProvider, ...]:
    """The JWT rules of every RequestAuthentication that applies to one workload, oldest policy first."""
    policies = resources.of_kind("RequestAuthentication")
    return tuple(p for policy in policies if applies_to(policy, namespace, labels) for p in providers_of(policy))


def workload_authz(
    resources: ResourceSet, namespace: str, labels: dict[str, str], jwt: tuple[JwtProvider, ...] = ()
) -> Authz | None:
    """The policies that apply to one workload, or None when none does (no RBAC filter); `jwt`: the
    workload's JWT rules, whose issuers request principals are matched by."""
    deny: list[AuthzRule] = []
    allow: list[AuthzRule] | None = None
    issuers = tuple(dict.fromkeys(p.issuer for p in jwt))
    for policy in resources.of_kind("AuthorizationPolicy"):
        if not applies_to(policy, namespace, labels):
            continue
        if policy.spec.get("action", "ALLOW") == "DENY":
            deny.extend(authz_rules(policy, issuers))
        else:
            allow = (allow or []) + list(authz_rules(policy, issuers))
    if not deny and allow is None:
        return None
    return Authz(tuple(deny), tuple(allow) if allow is not None else None)
