"""request-authentication: RequestAuthentication (JWT) on minimal-service, alone and with an AuthorizationPolicy
that requires a request principal or a claim (istio.io's Authentication Policy "end-user authentication" and
Authorization "JWT Token" tasks).

The signing key and the tokens are made when the scenario runs.
"""

from __future__ import annotations

import dataclasses

from meshy import stats
from meshy.console import Console
from meshy.render import Jwt
from meshy.scenarios.authorization import denied
from meshy.scenarios.backends import Backend
from meshy.scenarios.checks import all_check, exact_check
from meshy.scenarios.tokens import Signer
from meshy.scenarios.traffic import Request, Result, get_request
from meshy.scenarios.verdict import ALPHA, Phase, Report

AUTHENTICATION = "istio/minimal-requestauthentication.yaml.j2"
POLICY = "istio/minimal-authorizationpolicy-jwt.yaml.j2"
HOST = "minimal.svc.kind.org"
ISSUER = "https://issuer.meshy.example"
# Envoy's jwt_authn answers 401 with the reason as the body (jwt_authn's status messages).
BAD_SIGNATURE = "Jwt verification fails"
EXPIRED = "Jwt is expired"
REFUSED_CALLS = 20
SETTLE = 10.0
MISS_RATE = 0.05


def rejected(reason: str):
    return lambda result: result.status == 401 and result.body == reason


def passed(result: Result) -> bool:
    return result.status == 200


def with_token(request: Request, token: str | None) -> Request:
    if token is None:
        return request
    return dataclasses.replace(request, headers={**request.headers, "Authorization": f"Bearer {token}"})


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "request-authentication",
        backend.name,
        backend.pair.name,
        "A RequestAuthentication on minimal-service makes its sidecar validate JWTs from one issuer: a request "
        "without a token still passes, one with a token that does not verify (another key, expired) gets 401. "
        "An AuthorizationPolicy on top admits alice's token, or any valid token whose groups claim holds admins; "
        "anything else, no token included, gets 403.",
    )
    n = stats.zero_events_sample_size(MISS_RATE, ALPHA)
    report.design.append(
        f"{n} requests per passing case: if none fails, a failure rate of {MISS_RATE:.0%} or more is ruled out at "
        f"alpha {ALPHA}; {REFUSED_CALLS} per refused case, counted exactly. Keys and tokens are made when it runs."
    )
    signer, stranger = Signer(ISSUER), Signer(ISSUER)  # the same key id: the signature itself fails
    tokens = {
        "no token": None,
        "alice's token": signer.token("alice"),
        "bob's token": signer.token("bob"),
        "carol's token in group admins": signer.token("carol", groups=["admins"]),
        "a token signed by another key": stranger.token("alice"),
        "an expired token": signer.token("alice", lifetime=-600),
    }
    options = dataclasses.replace(backend.options, jwt=Jwt(ISSUER, signer.jwks))
    base = get_request(backend.ingress, HOST)

    def send(what: str, count: int) -> list[Result]:
        with console.step(f"{count} requests with {what}"):
            return backend.send(with_token(base, tokens[what]), count)

    def expect(phase: str, what: str, ok, label: str, passing: bool) -> int:
        results = send(what, n if passing else REFUSED_CALLS)
        hits = sum(1 for r in results if ok(r))
        if passing:
            report.add(all_check(f"{phase}, {what}: {label}", hits, n, "pass", MISS_RATE))
        else:
            report.add(exact_check(f"{phase}, {what}: {label}", hits, REFUSED_CALLS, "every request"))
        return hits

    with console.step("apply the RequestAuthentication on minimal-service; wait until it holds"):
        backend.apply(AUTHENTICATION, options)
        backend.poll(lambda: backend.send(with_token(base, tokens["an expired token"]), 1)[0].status == 401, SETTLE)
    alone = {
        "no token": expect("RequestAuthentication", "no token", passed, "200", True),
        "alice": expect("RequestAuthentication", "alice's token", passed, "200", True),
        "other key": expect(
            "RequestAuthentication",
            "a token signed by another key",
            rejected(BAD_SIGNATURE),
            f"401 {BAD_SIGNATURE}",
            False,
        ),
        "expired": expect("RequestAuthentication", "an expired token", rejected(EXPIRED), f"401 {EXPIRED}", False),
    }
    report.phases.append(Phase("RequestAuthentication alone", alone))

    with console.step("apply the AuthorizationPolicy requiring alice or group admins; wait until it holds"):
        backend.apply(POLICY, options)
        backend.poll(lambda: denied(backend.send(base, 1)[0]), SETTLE)
    phase = "with the AuthorizationPolicy"
    policy = {
        "no token refused": expect(phase, "no token", denied, "403 RBAC: access denied", False),
        "alice": expect(phase, "alice's token", passed, "200", True),
        "bob refused": expect(phase, "bob's token", denied, "403 RBAC: access denied", False),
        "carol (admins)": expect(phase, "carol's token in group admins", passed, "200", True),
    }
    report.phases.append(Phase(phase, policy))

    with console.step("remove the AuthorizationPolicy and the RequestAuthentication (back to the baseline)"):
        backend.delete(POLICY)
        backend.delete(AUTHENTICATION)
    report.requests = 4 * n + 4 * REFUSED_CALLS
    return report
