"""mtls: PeerAuthentication PERMISSIVE and STRICT, the caller's SPIFFE identity, and a DestinationRule
that turns mutual TLS off towards a STRICT workload.

What Istio does by default (auto mTLS) and what the modes change; the local
backend's translation of it cites istio/istio in meshy/local/security.py.
"""

from __future__ import annotations

import dataclasses

from meshy import stats
from meshy.console import Console
from meshy.local.spiffe import GATEWAY_ACCOUNTS, spiffe_id
from meshy.scenarios.backends import Backend
from meshy.scenarios.checks import all_check, exact_check
from meshy.scenarios.traffic import Result, bounce_request, get_request
from meshy.scenarios.verdict import ALPHA, Phase, Report

PEER_AUTHENTICATION = "istio/peer-authentication.yaml.j2"
PLAINTEXT_RULE = "istio/bounced-destinationrule-plaintext.yaml.j2"
HOST = "minimal.svc.kind.org"
BOUNCED = "http://bounced-service:9090/"
OUTSIDE_CALLS = 20
SETTLE = 10.0  # seconds a policy may take to reach the proxies (a cluster pushes it asynchronously)
MISS_RATE = 0.05
GATEWAY_ID = spiffe_id("istio-system", GATEWAY_ACCOUNTS["istio-ingressgateway"])
# minimal-service runs as the namespace's default service account (no serviceAccountName).
CALLER_ID = spiffe_id("default", "default")
# bounced-service answers 500 to about 70% of calls by design: either answer is a call that arrived.
ARRIVED = ("200 OK", "500 Internal Server Error")


def caller_identity(result: Result) -> str | None:
    """The URI of the X-Forwarded-Client-Cert element the answering sidecar added, as the app echoes it."""
    if result.status != 200:
        return None
    header = (result.json().get("headers") or {}).get("X-Forwarded-Client-Cert", "")
    last = header.split(",")[-1] if header else ""
    fields = dict(part.split("=", 1) for part in last.split(";") if "=" in part)
    return fields.get("URI")


def set_mode(backend: Backend, console: Console, mode: str) -> None:
    with console.step(f"apply PeerAuthentication default: {mode} in namespace default; wait until it holds"):
        backend.apply(PEER_AUTHENTICATION, dataclasses.replace(backend.options, mtls_mode=mode))
        refused = mode == "STRICT"
        # Not wait_for: a mesh that never enforces the mode is a failed check below, not an error.
        backend.poll(lambda: backend.outside_call("minimal-service") != refused, SETTLE)


def outside(backend: Backend, console: Console, mode: str, report: Report) -> int:
    """Plain calls from outside the mesh, each on its own connection; the count answered."""
    with console.step(f"{mode}: {OUTSIDE_CALLS} plain HTTP calls from outside the mesh to minimal-service's sidecar"):
        answered = sum(backend.outside_call("minimal-service") for _ in range(OUTSIDE_CALLS))
    want, what = (0, "none: plaintext refused") if mode == "STRICT" else (OUTSIDE_CALLS, "every one")
    report.add(exact_check(f"{mode}: calls from outside the mesh answered", answered, want, what))
    return answered


def through_gateway(backend: Backend, console: Console, mode: str, n: int, report: Report) -> int:
    with console.step(f"{mode}: {n} requests through the ingress gateway"):
        results = backend.send(get_request(backend.ingress, HOST), n, lambda d, t: console.progress("requests", d, t))
    carried = sum(1 for r in results if caller_identity(r) == GATEWAY_ID)
    report.add(
        all_check(f"{mode}: the app sees the gateway's identity {GATEWAY_ID}", carried, n, "carry it", MISS_RATE)
    )
    return carried


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "mtls",
        backend.name,
        backend.pair.name,
        "Sidecars and gateways speak mutual TLS to each other by default (auto mTLS), each with a SPIFFE "
        "certificate of its service account. PERMISSIVE accepts plaintext from outside the mesh as well; STRICT "
        "refuses it while mesh calls go on and carry the caller's identity; a DestinationRule with tls DISABLE "
        "towards a STRICT workload fails.",
    )
    n = stats.zero_events_sample_size(MISS_RATE, ALPHA)
    report.design.append(
        f"{OUTSIDE_CALLS} outside calls per mode, counted exactly; {n} mesh calls per check: if none misses, "
        f"a miss rate of {MISS_RATE:.0%} or more is ruled out at alpha {ALPHA}. Mesh calls reaching "
        "bounced-service are counted exactly by its sidecar (istio_requests_total, reporter destination)."
    )
    bounce = bounce_request(backend.ingress, BOUNCED)
    backend.delete(PLAINTEXT_RULE)

    set_mode(backend, console, "PERMISSIVE")
    answered = outside(backend, console, "PERMISSIVE", report)
    carried = through_gateway(backend, console, "PERMISSIVE", n, report)
    report.phases.append(Phase("PERMISSIVE", {"outside answered": answered, "gateway calls with identity": carried}))

    set_mode(backend, console, "STRICT")
    answered = outside(backend, console, "STRICT", report)
    carried = through_gateway(backend, console, "STRICT", n, report)
    labels = {"source_principal": CALLER_ID, "connection_security_policy": "mutual_tls"}
    start = backend.destination_requests("bounced-service", **labels)
    with console.step(f"STRICT: {n} calls minimal-service -> bounced-service (sidecar to sidecar)"):
        bounces = backend.send(bounce, n, lambda d, t: console.progress("calls", d, t))
    arrived = sum(1 for r in bounces if r.status == 200 and r.json().get("body") in ARRIVED)
    report.add(all_check("STRICT: mesh calls answered by bounced-service", arrived, n, "arrive", MISS_RATE))
    # The sidecar reports each request as it completes; poll until the count is in (a short count fails below).
    backend.poll(lambda: backend.destination_requests("bounced-service", **labels) - start >= n, 10)
    counted = backend.destination_requests("bounced-service", **labels) - start
    report.add(
        exact_check(f"STRICT: bounced-service's requests over mutual TLS from {CALLER_ID}", counted, n, "one per call")
    )
    report.phases.append(
        Phase(
            "STRICT",
            {"outside answered": answered, "gateway calls with identity": carried, "mesh calls over mTLS": counted},
        )
    )

    with console.step("apply a DestinationRule with tls DISABLE for bounced-service (STRICT)"):
        backend.apply(PLAINTEXT_RULE)
        backend.poll(lambda: backend.send(bounce, 1)[0].json().get("body") not in ARRIVED, SETTLE)
    with console.step(f"DISABLE towards STRICT: {OUTSIDE_CALLS} calls minimal-service -> bounced-service"):
        refused = backend.send(bounce, OUTSIDE_CALLS)
    failed = sum(1 for r in refused if r.status == 200 and r.json().get("body") == "503 Service Unavailable")
    report.add(
        exact_check(
            "DestinationRule DISABLE to a STRICT workload: calls failing with 503", failed, OUTSIDE_CALLS, "every call"
        )
    )
    report.phases.append(Phase("DISABLE to STRICT", {"503": failed, "other": OUTSIDE_CALLS - failed}))

    with console.step("remove the PeerAuthentication and the DestinationRule (back to the baseline)"):
        backend.delete(PLAINTEXT_RULE)
        backend.delete(PEER_AUTHENTICATION)
    report.requests = 2 * OUTSIDE_CALLS + 3 * n + 2 * OUTSIDE_CALLS
    return report
