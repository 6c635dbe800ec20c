"""authorization: AuthorizationPolicy DENY by path, method and header, ALLOW by source principal.

Requests a policy refuses get 403 "RBAC: access denied" from the workload's
sidecar; every other request passes. Istio's semantics as meshy/local/rbac.py
and security.py cite them.
"""

from __future__ import annotations

from meshy import stats
from meshy.console import Console
from meshy.scenarios.backends import Backend
from meshy.scenarios.checks import all_check, exact_check
from meshy.scenarios.mtls import ARRIVED, BOUNCED, HOST, SETTLE
from meshy.scenarios.traffic import Request, Result, bounce_request, get_request
from meshy.scenarios.verdict import ALPHA, Phase, Report

DENY = "istio/minimal-authorizationpolicy-deny.yaml.j2"
ALLOW = "istio/bounced-authorizationpolicy-allow.yaml.j2"
OUTSIDE_CALLS = 20
MISS_RATE = 0.05
DENIED = "RBAC: access denied"


def denied(result: Result) -> bool:
    return result.status == 403 and result.body == DENIED


def cases(ingress: str) -> list[tuple[str, Request, bool]]:
    """(what, request, refused?) through the ingress gateway to minimal-service."""
    plain = get_request(ingress, HOST)
    return [
        ("GET / (no rule matches)", plain, False),
        ("GET /admin/users (path /admin*)", get_request(ingress, HOST, "/admin/users"), True),
        ("DELETE / (method DELETE)", Request("DELETE", plain.url, plain.headers), True),
        ("GET / with x-block: yes (header)", Request("GET", plain.url, {**plain.headers, "x-block": "yes"}), True),
    ]


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "authorization",
        backend.name,
        backend.pair.name,
        "An AuthorizationPolicy DENY on minimal-service refuses requests by path, method and header with 403 "
        "'RBAC: access denied' and lets the rest through; an ALLOW on bounced-service admits only "
        "minimal-service's identity (its mutual TLS certificate), so a client outside the mesh is refused.",
    )
    n = stats.zero_events_sample_size(MISS_RATE, ALPHA)
    report.design.append(
        f"{n} requests per case: if none goes the other way, a rate of {MISS_RATE:.0%} or more is ruled out at "
        f"alpha {ALPHA}; {OUTSIDE_CALLS} calls from outside the mesh, counted exactly."
    )
    with console.step("apply the DENY policy on minimal-service and the ALLOW policy on bounced-service"):
        backend.apply(DENY)
        backend.apply(ALLOW)
        admin = get_request(backend.ingress, HOST, "/admin/users")
        # A keep-alive connection opened before keeps the old filter chain for one more request.
        backend.poll(lambda: denied(backend.send(admin, 1)[0]), SETTLE)
        backend.poll(lambda: not backend.outside_call("bounced-service"), SETTLE)
    for what, request, refused in cases(backend.ingress):
        with console.step(f"{n} x {what}"):
            results = backend.send(request, n)
        if refused:
            hits = sum(1 for r in results if denied(r))
            report.add(all_check(f"{what}: 403 {DENIED}", hits, n, "are refused", MISS_RATE))
        else:
            hits = sum(1 for r in results if r.status == 200)
            report.add(all_check(f"{what}: 200", hits, n, "pass", MISS_RATE))
        report.phases.append(Phase(what, {"403" if refused else "200": hits, "other": n - hits}))

    with console.step(f"{n} calls minimal-service -> bounced-service (an allowed principal)"):
        bounces = backend.send(bounce_request(backend.ingress, BOUNCED), n)
    arrived = sum(1 for r in bounces if r.status == 200 and r.json().get("body") in ARRIVED)
    report.add(all_check("minimal-service's identity reaches bounced-service", arrived, n, "arrive", MISS_RATE))
    with console.step(f"{OUTSIDE_CALLS} calls from outside the mesh to bounced-service (no principal)"):
        answered = sum(backend.outside_call("bounced-service") for _ in range(OUTSIDE_CALLS))
    report.add(exact_check("calls from outside the mesh answered by bounced-service", answered, 0, "none"))
    report.phases.append(Phase("to bounced-service", {"from minimal-service": arrived, "from outside": answered}))

    with console.step("remove both policies (back to the baseline)"):
        backend.delete(ALLOW)
        backend.delete(DENY)
    report.requests = 5 * n + OUTSIDE_CALLS
    return report
