"""AuthorizationPolicy in Envoy's v3 JSON: the RBAC HTTP filters of a listener.

As Istio 1.30.3 writes them (pilot/pkg/security/authz/builder/builder.go,
model/permission.go, model/principal.go): one `envoy.filters.http.rbac`
with action DENY, then one with action ALLOW; a rule is one RBAC policy whose
permissions hold the operations and whose principals hold the sources and
conditions, each list AND-ed and each field's values OR-ed. A request RBAC
refuses gets 403 with the body "RBAC: access denied".
"""

from __future__ import annotations

from typing import Any

from meshy.local.jwt import FILTER as JWT_FILTER
from meshy.local.jwt import PAYLOAD
from meshy.local.model import Authz, AuthzCondition, AuthzOperation, AuthzRule, AuthzSource, ClaimMatch, StringMatch

RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


def string_matcher(match: StringMatch) -> dict[str, Any]:
    if match.kind == "regex":
        return {"safe_regex": {"regex": match.value}}
    return {match.kind: match.value}


def any_of(items: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """OR of permissions (kind 'rules') or principals ('ids'); one item stands for itself."""
    return items[0] if len(items) == 1 else {f"or_{kind}": {kind: items}}


def all_of(items: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    if not items:
        return {"any": True}
    return items[0] if len(items) == 1 else {f"and_{kind}": {kind: items}}


def negated(item: dict[str, Any], kind: str) -> dict[str, Any]:
    return {"not_rule" if kind == "rules" else "not_id": item}


def principal_name(match: StringMatch) -> dict[str, Any]:
    return {"authenticated": {"principal_name": string_matcher(match)}}


def payload(claim: str, value: dict[str, Any]) -> dict[str, Any]:
    """A principal on one claim of the validated token (jwt_authn's payload in dynamic metadata)."""
    path = [{"key": PAYLOAD}, {"key": claim}]
    return {"metadata": {"filter": JWT_FILTER, "path": path, "value": value}}


def request_principal(match: ClaimMatch) -> dict[str, Any]:
    """Istio's request principal iss/sub as the token's iss and sub claims (Istio reads them joined, from its
    own istio_authn filter; jwt.py claim_matches splits a value by the issuers the workload accepts)."""
    issuer = {"present_match": True} if match.issuer is None else {"string_match": {"exact": match.issuer}}
    parts = [payload("iss", issuer)]
    if match.subject is not None:
        parts.append(payload("sub", {"string_match": string_matcher(match.subject)}))
    return all_of(parts, "ids")


def claim(name: str, match: StringMatch) -> dict[str, Any]:
    """request.auth.claims[NAME]: the claim is the value, or a list holding it (generator.go requestClaimGenerator)."""
    value = string_matcher(match)
    either = [{"string_match": value}, {"list_match": {"one_of": {"string_match": value}}}]
    return payload(name, {"or_match": {"value_matchers": either}})


def header(name: str, match: StringMatch) -> dict[str, Any]:
    return {"header": {"name": name, "string_match": string_matcher(match)}}


def method(value: str) -> dict[str, Any]:
    return header(":method", StringMatch("exact", value))


def path(match: StringMatch) -> dict[str, Any]:
    return {"url_path": {"path": string_matcher(match)}}


def field(values: list[dict[str, Any]], not_values: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """A field's part of an AND: any of its values, and none of its not-values."""
    parts = [any_of(values, kind)] if values else []
    if not_values:
        parts.append(negated(any_of(not_values, kind), kind))
    return parts


def operation(item: AuthzOperation) -> dict[str, Any]:
    parts = field([path(m) for m in item.paths], [path(m) for m in item.not_paths], "rules")
    parts += field([method(m) for m in item.methods], [method(m) for m in item.not_methods], "rules")
    return all_of(parts, "rules")


def source(item: AuthzSource) -> dict[str, Any]:
    parts = field([principal_name(m) for m in item.principals], [principal_name(m) for m in item.not_principals], "ids")
    parts += field(
        [principal_name(m) for m in item.namespaces], [principal_name(m) for m in item.not_namespaces], "ids"
    )
    parts += field(
        [request_principal(m) for m in item.request_principals],
        [request_principal(m) for m in item.not_request_principals],
        "ids",
    )
    return all_of(parts, "ids")


def condition(item: AuthzCondition) -> list[dict[str, Any]]:
    if item.key == "request_principal":
        return field(
            [request_principal(m) for m in item.principals], [request_principal(m) for m in item.not_principals], "ids"
        )

    def one(match: StringMatch) -> dict[str, Any]:
        if item.key == "header":
            return header(item.header, match)
        return claim(item.header, match) if item.key == "claim" else principal_name(match)

    return field([one(m) for m in item.values], [one(m) for m in item.not_values], "ids")


def policy(rule: AuthzRule) -> dict[str, Any]:
    if rule.never:
        # builder.go rbacPolicyMatchNever: a principal that can never hold.
        return {"permissions": [{"any": True}], "principals": [{"not_id": {"any": True}}]}
    permissions = [operation(o) for o in rule.operations] if rule.operations is not None else [{"any": True}]
    ids = [any_of([source(s) for s in rule.sources], "ids")] if rule.sources is not None else []
    for item in rule.conditions:
        ids += condition(item)
    return {"permissions": [any_of(permissions, "rules")], "principals": [all_of(ids, "ids")]}


def rbac_filter(action: str, rules: tuple[AuthzRule, ...]) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {"@type": RBAC, "rules": {"action": action, "policies": {r.name: policy(r) for r in rules}}},
    }


def rbac_filters(authz: Authz | None) -> list[dict[str, Any]]:
    """The listener's RBAC filters, DENY before ALLOW; none without a policy."""
    if authz is None:
        return []
    filters = [rbac_filter("DENY", authz.deny)] if authz.deny else []
    if authz.allow is not None:
        filters.append(rbac_filter("ALLOW", authz.allow))
    return filters
