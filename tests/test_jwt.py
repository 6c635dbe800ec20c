"""RequestAuthentication and request principals (meshy/local/jwt.py and rbac.py cite Istio): translation rules,
refusals, real Envoy with real tokens, and the request-authentication verdict."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from meshy.console import Console
from meshy.local import topology
from meshy.local.build import Inputs, build_mesh
from meshy.local.jwt import NEVER, claim_matches
from meshy.local.model import ClaimMatch, StringMatch
from meshy.local.resources import ResourceError, ResourceSet, parse_documents
from meshy.net import wait_until
from meshy.render import RenderOptions
from meshy.scenarios import authorization, request_authentication
from meshy.scenarios.tokens import Signer
from meshy.scenarios.traffic import Request, Result
from meshy.versions import select_pair
from tests.local_mesh import running

ISSUER = "https://issuer.example.org"
SIGNER = Signer(ISSUER)


def request_authentication_doc(rule: str = "", selector: str = "{matchLabels: {app: minimal-service}}") -> str:
    rule = rule or f"{{issuer: {ISSUER}, jwks: '{SIGNER.jwks}'}}"
    return (
        "apiVersion: security.istio.io/v1beta1\nkind: RequestAuthentication\n"
        f"metadata: {{name: ra, namespace: default}}\nspec:\n  selector: {selector}\n  jwtRules: [{rule}]\n"
    )


def policy_doc(source: str = "", when: str = "") -> str:
    rule = f"from: [{{source: {source}}}]" if source else f"when: [{when}]"
    return (
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\n"
        "metadata: {name: jwt, namespace: default}\n"
        f"spec:\n  selector: {{matchLabels: {{app: minimal-service}}}}\n  rules: [{{{rule}}}]\n"
    )


def test_request_principals_split_by_the_issuers_the_workload_accepts():
    issuers = (ISSUER, "other")
    assert claim_matches(f"{ISSUER}/alice", issuers) == (ClaimMatch(ISSUER, StringMatch("exact", "alice")),)
    assert claim_matches("*", issuers) == (ClaimMatch(None),)
    assert claim_matches("other/*", issuers) == (ClaimMatch("other"),)
    assert claim_matches(f"{ISSUER}/a*", issuers) == (ClaimMatch(ISSUER, StringMatch("prefix", "a")),)
    assert claim_matches("*-bot", issuers) == (ClaimMatch(None, StringMatch("suffix", "-bot")),)
    # An issuer no RequestAuthentication accepts never validates: its principals never match.
    assert claim_matches("stranger/alice", issuers) == (NEVER,)


def build(*texts: str):
    resources = ResourceSet().applied(r for text in texts for r in parse_documents(text, "test"))
    layout = topology.Layout()
    pods, _ = topology.pods(resources, {}, layout)
    return build_mesh(Inputs(resources, pods, topology.gateways(layout), {}))


DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: minimal-service, namespace: default}
spec:
  selector: {matchLabels: {app: minimal-service}}
  template:
    metadata: {labels: {app: minimal-service}}
    spec: {containers: [{name: app, image: minimal-service, ports: [{containerPort: 9090}]}]}
"""


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ((request_authentication_doc(f"{{issuer: {ISSUER}}}"),), "jwks is required locally"),
        ((request_authentication_doc(f"{{issuer: {ISSUER}, jwks: 'not json'}}"),), "is not a JWKS"),
        ((request_authentication_doc(f"{{issuer: {ISSUER}, jwksUri: 'https://x/keys'}}"),), "jwksUri is not supported"),
        ((policy_doc(when='{key: "request.auth.audiences", values: [a]}'),), "when key request.auth.audiences"),
        ((policy_doc(source='{requestPrincipals: ["*x/y"]}'),), "a suffix holding '/'"),
    ],
)
def test_what_the_local_backend_cannot_do_is_refused_in_one_line(texts, message):
    with pytest.raises(ResourceError, match=message) as caught:
        build(DEPLOYMENT, *texts)
    assert "\n" not in str(caught.value)


def test_the_jwt_rules_reach_the_selected_workloads_inbound_side_only():
    mesh = build(DEPLOYMENT, request_authentication_doc())
    pod = next(p for name, p in mesh.proxies.items() if name.startswith("minimal-service"))
    inbound = [listener for listener in pod.listeners if listener.name.startswith("inbound")]
    assert [p.issuer for p in inbound[0].jwt] == [ISSUER]
    assert all(not listener.jwt for listener in pod.listeners if listener not in inbound)  # not outbound
    other = build(DEPLOYMENT, request_authentication_doc(selector="{matchLabels: {app: elsewhere}}"))
    assert all(not listener.jwt for proxy in other.proxies.values() for listener in proxy.listeners)


def test_tokens_on_real_envoy(tmp_path):
    alice, bob = SIGNER.token("alice"), SIGNER.token("bob")
    forged = Signer(ISSUER).token("alice")  # same key id, another key

    with running(tmp_path / "state") as mesh:

        def status(token: str | None) -> tuple[int, str]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = mesh.get(headers=headers)
            return response.status_code, response.text if response.status_code != 200 else ""

        mesh.apply(request_authentication_doc())
        # Keep-alive connections opened before keep their old filter chain until Envoy drains them.
        assert wait_until(lambda: status(forged)[0] == 401, timeout=10)
        assert status(None) == (200, "")
        assert status(alice) == (200, "")
        assert status(forged) == (401, "Jwt verification fails")
        mesh.apply(policy_doc(source=f'{{requestPrincipals: ["{ISSUER}/alice"]}}'))
        assert wait_until(lambda: status(bob)[0] == 403, timeout=10)
        assert status(alice) == (200, "")
        assert status(bob) == (403, authorization.DENIED)
        assert status(None) == (403, authorization.DENIED)


def verified_claims(token: str, jwks: str) -> dict | None:
    """The token's claims if its RS256 signature verifies against the JWKS's key, else None."""
    key = json.loads(jwks)["keys"][0]
    numbers = rsa.RSAPublicNumbers(*(int.from_bytes(decode(key[k]), "big") for k in ("e", "n")))
    head, body, signature = token.split(".")
    try:
        numbers.public_key().verify(decode(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return None
    return json.loads(decode(body))


def decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class ScriptedJwt:
    """A sidecar validating tokens with the JWKS it was given, as Istio's does, with one behaviour broken on request."""

    broken: str = ""
    name: str = "local"
    pair: object = field(default_factory=select_pair)
    options: RenderOptions = field(default_factory=RenderOptions)
    applied: set = field(default_factory=set)
    jwks: str = ""

    @property
    def ingress(self) -> str:
        return "http://127.0.0.1:1"

    def apply(self, template: str, options: RenderOptions | None = None) -> None:
        self.applied.add(template)
        self.jwks = (options or self.options).jwt.jwks

    def delete(self, template: str, options: RenderOptions | None = None) -> None:
        self.applied.discard(template)

    def poll(self, check, timeout: float) -> bool:
        return bool(check())

    def send(self, request: Request, n: int, progress=None, workers: int = 1) -> list[Result]:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return [self.one(token) for _ in range(n)]

    def one(self, token: str) -> Result:
        claims = verified_claims(token, self.jwks) if token else None
        if request_authentication.AUTHENTICATION in self.applied:
            if token and self.broken != "invalid accepted":
                if claims is None:
                    return Result(401, request_authentication.BAD_SIGNATURE, 0.0)
                if claims["exp"] < time.time():
                    return Result(401, request_authentication.EXPIRED, 0.0)
            if not token and self.broken == "missing refused":
                return Result(401, "Jwt is missing", 0.0)
        if request_authentication.POLICY in self.applied and self.broken != "policy ignored":
            claims = claims or {}
            if claims.get("sub") != "alice" and "admins" not in claims.get("groups", []):
                return Result(403, authorization.DENIED, 0.0)
        return Result(200, "{}", 0.0)


@pytest.mark.parametrize("broken", ["", "invalid accepted", "missing refused", "policy ignored"])
def test_the_verdict_passes_only_when_tokens_are_handled_as_istio_does(broken):
    report = request_authentication.run(ScriptedJwt(broken), Console(quiet=True))
    assert report.passed == (broken == ""), [c for c in report.checks if not c.passed]
