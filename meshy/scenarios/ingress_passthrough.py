"""ingress-passthrough: the ingress gateway routes TLS by SNI to the external service without terminating it
(istio.io's Ingress Gateway without TLS Termination task).

A Gateway PASSTHROUGH server on port 443 for the external host and a
VirtualService tls route send the client's TLS connection, unopened, to the
external service's TLS port. What shows the gateway did not terminate: the
client verifies the certificate against the external service's CA (the
gateway holds no certificate signed by it) and the external service logs each
request as one it received over TLS. A name no route matches has no filter
chain, so the gateway ends the handshake.
"""

from __future__ import annotations

import re
from collections import Counter

from meshy import stats
from meshy.console import Console
from meshy.scenarios.backends import Backend
from meshy.scenarios.checks import all_check, exact_check
from meshy.scenarios.https import OK, REFUSED, UNTRUSTED
from meshy.scenarios.verdict import ALPHA, Phase, Report

TEMPLATE = "istio/ingress-passthrough.yaml.j2"
UNROUTED = "unrouted.external.kind.org"  # a name of the same domain no tls route matches
REFUSED_CALLS = 20
SETTLE = 10.0  # seconds a Gateway may take to reach the gateway (a cluster pushes it asynchronously)
MISS_RATE = 0.05
TLS_LOGGED = re.compile(r"\[GET / \S+ tls\] 200")  # what the external service logs of a request over TLS
ANY_LOGGED = re.compile(r"\[GET / ")


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "ingress-passthrough",
        backend.name,
        backend.pair.name,
        "The ingress gateway passes TLS on port 443 through to the external service: a Gateway server with "
        "tls.mode PASSTHROUGH and a VirtualService tls route matching the SNI name. Clients verify the external "
        "service's own certificate against its CA, and the service logs each request as received over TLS; a "
        "name no route matches is refused in the handshake.",
    )
    n = stats.zero_events_sample_size(MISS_RATE, ALPHA)
    report.design.append(
        f"{n} HTTPS calls with the external host's name, each on a new connection: if none fails, a failure rate "
        f"of {MISS_RATE:.0%} or more is ruled out at alpha {ALPHA}, and the external service must log exactly {n} "
        f"requests over TLS. {REFUSED_CALLS} calls trusting another CA and {REFUSED_CALLS} with a name no route "
        "matches, counted exactly."
    )
    host = backend.options.external.host
    ca, other_ca = backend.external_cas()

    def calls(name: str, trust: str, count: int, what: str) -> list[str]:
        with console.step(f"{count} HTTPS calls to the ingress gateway with SNI {name}: {what}"):
            return backend.https_calls(name, trust, None, count)

    def logged() -> tuple[int, int]:
        text = backend.external_log()
        return len(TLS_LOGGED.findall(text)), len(ANY_LOGGED.findall(text))

    with console.step("apply the PASSTHROUGH Gateway, the ServiceEntry of the TLS port and the tls route; wait"):
        backend.apply(TEMPLATE)
        # Not wait_for: a gateway that never passes TLS through is a failed check below, not an error.
        backend.poll(lambda: backend.https_calls(host, ca, None, 1) == [OK], SETTLE)
    start = logged()
    answered = calls(host, ca, n, "trusting the external service's CA")
    report.add(
        all_check("calls trusting the external CA answered 200", answered.count(OK), n, "be answered", MISS_RATE)
    )
    # The log is written as requests finish; a short count after the wait fails the check with its number.
    backend.poll(lambda: logged()[0] - start[0] >= answered.count(OK) > 0, SETTLE)
    now = logged()
    report.add(exact_check("requests the external service logged over TLS", now[0] - start[0], n, "one per call"))
    report.add(
        exact_check(
            "requests the external service logged in plain HTTP", (now[1] - start[1]) - (now[0] - start[0]), 0, "none"
        )
    )
    strangers = calls(host, other_ca, REFUSED_CALLS, "trusting another CA")
    report.add(
        exact_check(
            "calls trusting another CA refuse the certificate", strangers.count(UNTRUSTED), REFUSED_CALLS, "every call"
        )
    )
    start = logged()
    unrouted = calls(UNROUTED, ca, REFUSED_CALLS, "a name no tls route matches")
    report.add(exact_check("calls with an unrouted name refused", unrouted.count(REFUSED), REFUSED_CALLS, "every call"))
    report.add(exact_check("unrouted calls the external service saw", logged()[1] - start[1], 0, "none"))
    report.phases.append(
        Phase(
            "PASSTHROUGH",
            {
                **{"external CA: " + k: v for k, v in Counter(answered).items()},
                **{"another CA: " + k: v for k, v in Counter(strangers).items()},
                **{"unrouted name: " + k: v for k, v in Counter(unrouted).items()},
            },
        )
    )

    with console.step("remove the Gateway, the ServiceEntry and the route (back to the baseline)"):
        backend.delete(TEMPLATE)
    report.requests = n + 2 * REFUSED_CALLS
    return report
