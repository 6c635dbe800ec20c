"""RequestAuthentication: JWT rules into the model, and Envoy's jwt_authn filter.

As Istio 1.30.3 builds it (pilot/pkg/security/authn/policy_applier.go
convertToEnvoyJwtConfig): one provider `origins-<i>` per jwtRule of every
RequestAuthentication that applies to the workload (the root namespace's
mesh-wide, the namespace's, those whose selector matches), keys inline, the
payload in dynamic metadata under "payload"; one rule on every path
requiring, for one provider, the provider or a missing token, and for
several, any provider or all of {provider or missing}. So a request without
a token passes and one with an invalid token gets Envoy's 401 ("Jwt
verification fails"), CORS preflights bypass it. Istio 1.8.6 keys the
metadata by issuer (v1beta1/policy_applier.go); that key is only read by
Istio's own istio_authn filter, which the local proxies replace by reading
the payload in their RBAC policies (rbac.py), so the local name is the same
for every release.

Locally the keys must be inline (`jwks`): istiod fetches `jwksUri` for a
cluster, the local mesh fetches nothing, so shapes.py does not accept `jwksUri`.
"""

from __future__ import annotations

import json
from typing import Any

from meshy.local.model import ClaimMatch, JwtProvider, Listener, StringMatch
from meshy.local.resources import BuildError, Resource, ResourceSet

JWT_AUTHN = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD = "payload"  # Istio's filters.EnvoyJwtFilterPayload
# No validated token has an empty issuer (jwtRules[].issuer is required): a principal no token can hold.
NEVER = ClaimMatch(issuer="")


def providers_of(policy: Resource) -> list[JwtProvider]:
    result = []
    for index, rule in enumerate(policy.spec.get("jwtRules") or []):
        where = f"{policy.key}: spec.jwtRules[{index}]"
        jwks = rule.get("jwks")
        if not jwks:
            raise BuildError(f"{where}: jwks is required locally (the keys, as JSON text); add it")
        try:
            keys = json.loads(jwks).get("keys")
        except (ValueError, AttributeError):
            keys = None
        if not isinstance(keys, list) or not keys:
            raise BuildError(f'{where}.jwks is not a JWKS (JSON with a non-empty "keys" list); fix it')
        result.append(
            JwtProvider(
                issuer=rule["issuer"],
                jwks=jwks,
                audiences=tuple(rule.get("audiences") or ()),
                from_headers=tuple((h["name"], h.get("prefix", "")) for h in rule.get("fromHeaders") or ()),
                from_params=tuple(rule.get("fromParams") or ()),
                forward=bool(rule.get("forwardOriginalToken", False)),
                payload_header=rule.get("outputPayloadToHeader", ""),
            )
        )
    return result


def check_request_authentication(resources: ResourceSet) -> None:
    """Refuse by name what the local backend cannot do, whichever workloads the policies select."""
    for policy in resources.of_kind("RequestAuthentication"):
        providers_of(policy)


def claim_matches(value: str, issuers: tuple[str, ...]) -> tuple[ClaimMatch, ...]:
    """A request principal (iss/sub, with Istio's '*' at either end) as matches on a token's iss and sub claims.

    The issuers are those the workload's RequestAuthentications accept: a token from any other is never
    validated, so it never has a principal.
    """
    if value == "*":
        return (ClaimMatch(None),)
    if value.startswith("*"):
        rest = value[1:]
        if "/" in rest:
            raise BuildError(
                f"request principal {value}: a suffix holding '/' is not supported locally; match the subject only"
            )
        return (ClaimMatch(None, StringMatch("suffix", rest)),)
    matches = []
    for issuer in issuers:
        head = issuer + "/"
        if value.endswith("*"):
            prefix = value[:-1]
            if head.startswith(prefix):
                matches.append(ClaimMatch(issuer))
            elif prefix.startswith(head):
                matches.append(ClaimMatch(issuer, StringMatch("prefix", prefix[len(head) :])))
        elif value.startswith(head):
            matches.append(ClaimMatch(issuer, StringMatch("exact", value[len(head) :])))
    return tuple(matches) or (NEVER,)


# --- Envoy ----------------------------------------------------------------------------


def provider(item: JwtProvider) -> dict[str, Any]:
    config: dict[str, Any] = {
        "issuer": item.issuer,
        "local_jwks": {"inline_string": item.jwks},
        "payload_in_metadata": PAYLOAD,
    }
    if item.audiences:
        config["audiences"] = list(item.audiences)
    if item.forward:
        config["forward"] = True
    if item.payload_header:
        config["forward_payload_header"] = item.payload_header
    if item.from_headers:
        config["from_headers"] = [{"name": name, "value_prefix": prefix} for name, prefix in item.from_headers]
    if item.from_params:
        config["from_params"] = list(item.from_params)
    return config


def jwt_filters(item: Listener) -> list[dict[str, Any]]:
    """The listener's jwt_authn filter (none without a RequestAuthentication)."""
    if not item.jwt:
        return []
    names = [f"origins-{index}" for index in range(len(item.jwt))]
    inner = [{"requires_any": {"requirements": [{"provider_name": n}, {"allow_missing": {}}]}} for n in names]
    if len(names) == 1:
        requires = inner[0]
    else:
        outer = [{"provider_name": n} for n in names] + [{"requires_all": {"requirements": inner}}]
        requires = {"requires_any": {"requirements": outer}}
    config = {
        "@type": JWT_AUTHN,
        "providers": {name: provider(p) for name, p in zip(names, item.jwt, strict=True)},
        "rules": [{"match": {"prefix": "/"}, "requires": requires}],
        "bypass_cors_preflight": True,
    }
    return [{"name": FILTER, "typed_config": config}]
