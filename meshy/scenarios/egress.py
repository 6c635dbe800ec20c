"""egress: a call from inside the mesh to an external host, before and after the egress setup."""

from __future__ import annotations

import re

from meshy import stats
from meshy.console import Console
from meshy.scenarios.backends import Backend, wait_for
from meshy.scenarios.checks import all_check, exact_check
from meshy.scenarios.traffic import bounce_request
from meshy.scenarios.verdict import ALPHA, Phase, Report

HOST = "minimal.external.kind.org"
EXTERNAL = f"http://{HOST}:9090"
FILES = ("istio/egress-gateway.yaml.j2", "istio/egress-virtualservice.yaml.j2", "istio/service-entry.yaml.j2")
BEFORE_CALLS = 20
MISS_RATE = 0.05
LOGGED = re.compile(r"\[GET / ")


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "egress",
        backend.name,
        backend.pair.name,
        "minimal-service calls minimal.external.kind.org, a service outside the mesh. Without a ServiceEntry "
        "the mesh cannot reach it; with the egress Gateway, VirtualService and ServiceEntry every call goes "
        "sidecar -> egress gateway -> external service, and both the gateway and the service count each one.",
    )
    n = stats.zero_events_sample_size(MISS_RATE, ALPHA)
    report.design.append(
        f"after: {n} calls; if none fails, a failure rate of {MISS_RATE:.0%} or more is ruled out at alpha {ALPHA}. "
        "The gateway's counter and the external log must rise by exactly that many."
    )
    request = bounce_request(backend.ingress, EXTERNAL)
    for template in reversed(FILES):
        backend.delete(template)
    with console.step(f"before: {BEFORE_CALLS} calls to {EXTERNAL} from minimal-service"):
        before = backend.send(request, BEFORE_CALLS)
    failed = sum(1 for r in before if not (r.status == 200 and r.json().get("body") == "200 OK"))
    report.add(exact_check("before: calls that fail (no ServiceEntry)", failed, BEFORE_CALLS, "every call"))
    report.phases.append(Phase("before ServiceEntry", {"200 OK": BEFORE_CALLS - failed, "failed": failed}))

    with console.step("apply egress-gateway, egress-virtualservice and service-entry; wait for a first success"):
        for template in FILES:
            backend.apply(template)
        wait_for(
            backend,
            lambda: backend.send(request, 1)[0].json().get("body") == "200 OK",
            "a call through the egress gateway",
        )
    gateway_start = backend.gateway_requests("istio-egressgateway", HOST)
    log_start = len(LOGGED.findall(backend.external_log()))
    with console.step(f"after: {n} calls through the egress gateway"):
        after = backend.send(request, n, lambda d, t: console.progress("calls", d, t))
    ok = sum(1 for r in after if r.status == 200 and r.json().get("body") == "200 OK")
    report.add(all_check("after: calls answered '200 OK'", ok, n, "succeed", MISS_RATE))
    gateway_delta = backend.gateway_requests("istio-egressgateway", HOST) - gateway_start
    report.add(exact_check("after: egress gateway requests to the external host", gateway_delta, n, "one per call"))
    # The log is written as requests finish; a short count after the wait fails the check with its number.
    backend.poll(lambda: len(LOGGED.findall(backend.external_log())) - log_start >= n, 10)
    logged = len(LOGGED.findall(backend.external_log())) - log_start
    report.add(exact_check("after: requests in the external service's log", logged, n, "one per call"))
    report.phases.append(Phase("after egress setup", {"200 OK": ok, "failed": n - ok}))

    with console.step("remove the egress resources (back to the baseline)"):
        for template in reversed(FILES):
            backend.delete(template)
    report.requests = BEFORE_CALLS + n
    return report
