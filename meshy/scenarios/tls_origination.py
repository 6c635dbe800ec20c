"""tls-origination: the app calls the external service in plain HTTP; its sidecar speaks TLS to it.

As istio.io's Egress TLS Origination task: a ServiceEntry with the external
host's plain port and its TLS port, a VirtualService sending the plain port's
calls to the TLS port, and a DestinationRule `tls: SIMPLE` for that port. The
external service (the sample service with its TLS listener) logs each request
and whether it came over TLS. The DestinationRule names its CA by path: a file
of a Secret mounted into minimal-service's sidecar.
"""

from __future__ import annotations

import dataclasses
import re

from meshy import stats
from meshy.console import Console
from meshy.scenarios.backends import Backend
from meshy.scenarios.certificates import b64
from meshy.scenarios.checks import all_check, exact_check
from meshy.scenarios.targets import upstream
from meshy.scenarios.traffic import Request, bounce_request
from meshy.scenarios.verdict import ALPHA, Phase, Report

SECRET = "istio/tls-origination-secret.yaml.j2"
ENTRY = "istio/tls-origination-serviceentry.yaml.j2"
RULE = "istio/tls-origination-destinationrule.yaml.j2"
FAILING_CALLS = 20
MISS_RATE = 0.05
# How long a DestinationRule may take to act: on kind a mounted Secret reaches the pod's files within
# the kubelet's sync period (about a minute); locally an apply is in force when it returns.
SETTLE = {"kind": 150.0}
LOCAL_SETTLE = 10.0
TLS_LOGGED = re.compile(r"\[GET /tls-origination \S+ tls\] 200")
ANY_LOGGED = re.compile(r"\[GET /tls-origination ")


def answered(body: str) -> bool:
    return body == "200 OK"


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "tls-origination",
        backend.name,
        backend.pair.name,
        "minimal-service calls the external service in plain HTTP on its plain port; a VirtualService sends "
        "those calls to the service's TLS port. Without a DestinationRule the sidecar speaks plain HTTP to the "
        "TLS port and every call fails; with `tls: SIMPLE` it originates TLS, checks the certificate against "
        "the CA file it is given, and every call is answered, each one logged by the external service as a "
        "TLS request. Given a CA that did not sign the certificate, every call fails again.",
    )
    n = stats.zero_events_sample_size(MISS_RATE, ALPHA)
    report.design.append(
        f"with origination: {n} calls; if none fails, a failure rate of {MISS_RATE:.0%} or more is ruled out at "
        f"alpha {ALPHA}, and the external service must log exactly {n} TLS requests. Without it, and trusting "
        f"another CA: {FAILING_CALLS} calls each, all failing, none reaching the service."
    )
    settle = SETTLE.get(backend.name, LOCAL_SETTLE)
    external = backend.options.external
    url = f"http://{external.host}:{external.port}/tls-origination"
    request = bounce_request(backend.ingress, url)
    ca, other_ca = backend.external_cas()
    trust = dataclasses.replace(backend.options.external_tls, ca=b64(ca), other_ca=b64(other_ca))
    trusted = dataclasses.replace(backend.options, external_tls=trust)
    stranger = dataclasses.replace(backend.options, external_tls=dataclasses.replace(trust, trust="other-ca.crt"))

    def bodies(count: int, what: str) -> list[str]:
        with console.step(f"{count} calls to {url} from minimal-service: {what}"):
            results = backend.send(request, count, lambda d, t: console.progress("calls", d, t))
        return [upstream(r) for r in results]

    def logged() -> tuple[int, int]:
        text = backend.external_log()
        return len(TLS_LOGGED.findall(text)), len(ANY_LOGGED.findall(text))

    with console.step("apply the Secret of CAs and the ServiceEntry with its plain and TLS ports, no DestinationRule"):
        backend.delete(RULE, trusted)
        backend.apply(SECRET, trusted)
        backend.apply(ENTRY, trusted)
    start = logged()
    plain = bodies(FAILING_CALLS, "plain HTTP to the TLS port")
    report.add(
        exact_check(
            "without origination: calls that fail", sum(not answered(b) for b in plain), FAILING_CALLS, "every call"
        )
    )
    reached = logged()[1] - start[1]
    report.add(exact_check("without origination: requests the external service saw", reached, 0, "none"))
    report.phases.append(
        Phase(
            "no DestinationRule", {"200 OK": sum(map(answered, plain)), "failed": sum(not answered(b) for b in plain)}
        )
    )

    with console.step("apply the DestinationRule tls SIMPLE trusting the service's CA; wait for a first answer"):
        backend.apply(RULE, trusted)
        # Not wait_for: a rule that never acts is a failed check below, not an error.
        backend.poll(lambda: answered(bodies_once(backend, request)), settle)
    start = logged()
    secured = bodies(n, "TLS originated by the sidecar")
    ok = sum(map(answered, secured))
    report.add(all_check("with origination: calls answered '200 OK'", ok, n, "succeed", MISS_RATE))
    # The log is written as requests finish; a short count after the wait fails the check with its number.
    backend.poll(lambda: logged()[0] - start[0] >= n, 10)
    now = logged()
    report.add(
        exact_check(
            "with origination: TLS requests in the external service's log", now[0] - start[0], n, "one per call"
        )
    )
    report.add(
        exact_check(
            "with origination: plain requests in the external service's log",
            (now[1] - start[1]) - (now[0] - start[0]),
            0,
            "none",
        )
    )
    report.phases.append(Phase("tls SIMPLE, trusted CA", {"200 OK": ok, "failed": n - ok}))

    with console.step("apply the DestinationRule trusting another CA; wait for a first refusal"):
        backend.apply(RULE, stranger)
        backend.poll(lambda: not answered(bodies_once(backend, request)), settle)
    start = logged()
    refused = bodies(FAILING_CALLS, "trusting a CA that did not sign the certificate")
    failed = sum(not answered(b) for b in refused)
    report.add(exact_check("trusting another CA: calls that fail", failed, FAILING_CALLS, "every call"))
    report.add(exact_check("trusting another CA: requests the external service saw", logged()[1] - start[1], 0, "none"))
    report.phases.append(Phase("tls SIMPLE, another CA", {"200 OK": FAILING_CALLS - failed, "failed": failed}))

    with console.step("remove the DestinationRule, the ServiceEntry and the Secret (back to the baseline)"):
        for template in (RULE, ENTRY, SECRET):
            backend.delete(template, trusted)
    report.requests = 2 * FAILING_CALLS + n
    return report


def bodies_once(backend: Backend, request: Request) -> str:
    return upstream(backend.send(request, 1)[0])
