"""secure-ingress: an HTTPS server on the ingress gateway with a certificate from a Kubernetes Secret (istio.io's
Secure Gateways task), SIMPLE and then MUTUAL.

The certificates are made when the scenario runs: a CA for the server, a
server certificate for the gateway's host, a client certificate from another
CA for MUTUAL, and a stranger CA neither side trusts. Every call is a new
connection (a full handshake), counted exactly.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from meshy import stats
from meshy.console import Console
from meshy.render import IngressTls
from meshy.scenarios.backends import Backend
from meshy.scenarios.certificates import Authority, b64
from meshy.scenarios.checks import all_check, exact_check
from meshy.scenarios.https import OK, REFUSED, UNTRUSTED
from meshy.scenarios.verdict import ALPHA, Phase, Report

SECRET = "istio/secure-ingress-secret.yaml.j2"
GATEWAY = "istio/secure-ingress-gateway.yaml.j2"
HOST = "secure.minimal.kind.org"
REFUSED_CALLS = 20
SETTLE = 10.0  # seconds a Gateway or Secret may take to reach the gateway (a cluster pushes it asynchronously)
MISS_RATE = 0.05


def configure(backend: Backend, console: Console, tls: IngressTls, ready) -> None:
    """Apply the Secret and the Gateway for one mode; wait until the gateway serves as that mode should."""
    options = dataclasses.replace(backend.options, ingress_tls=tls)
    with console.step(f"apply Secret secure-ingress-credential and Gateway secure-gateway ({tls.mode}); wait for it"):
        backend.apply(SECRET, options)
        backend.apply(GATEWAY, options)
        # Not wait_for: a gateway that never serves is a failed check below, not an error.
        backend.poll(ready, SETTLE)


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "secure-ingress",
        backend.name,
        backend.pair.name,
        "The ingress gateway terminates TLS on port 443 with the certificate and key of a Kubernetes Secret named "
        "by the Gateway's credentialName. SIMPLE: clients that trust the issuing CA get answers, others refuse the "
        "certificate. MUTUAL: the gateway also asks for a client certificate signed by the Secret's CA.",
    )
    n = stats.zero_events_sample_size(MISS_RATE, ALPHA)
    report.design.append(
        f"{n} HTTPS calls per passing case, each on a new connection: if none fails, a failure rate of "
        f"{MISS_RATE:.0%} or more is ruled out at alpha {ALPHA}; {REFUSED_CALLS} calls per refused case, "
        "counted exactly. Certificates are made when the scenario runs."
    )
    server_ca, client_ca, stranger = Authority("example.com"), Authority("clients.example.com"), Authority("stranger")
    server = server_ca.issue(HOST)
    client, stray_client = client_ca.issue("client.example.com", client=True), stranger.issue("x", client=True)
    simple = IngressTls("SIMPLE", b64(server.cert), b64(server.key))
    mutual = IngressTls("MUTUAL", b64(server.cert), b64(server.key), b64(client_ca.pem))

    def calls(trust: str, with_client, count: int, what: str) -> list[str]:
        with console.step(f"{count} HTTPS calls to {HOST}: {what}"):
            return backend.https_calls(HOST, trust, with_client, count)

    configure(backend, console, simple, lambda: backend.https_calls(HOST, server_ca.pem, None, 1) == [OK])
    answered = calls(server_ca.pem, None, n, "trusting the issuing CA")
    report.add(all_check("SIMPLE: calls trusting the CA answered 200", answered.count(OK), n, "be answered", MISS_RATE))
    strangers = calls(stranger.pem, None, REFUSED_CALLS, "trusting another CA")
    report.add(
        exact_check(
            "SIMPLE: calls trusting another CA refuse the certificate",
            strangers.count(UNTRUSTED),
            REFUSED_CALLS,
            "every call",
        )
    )
    report.phases.append(Phase("SIMPLE", {"trusted: " + k: v for k, v in Counter(answered).items()}))

    configure(backend, console, mutual, lambda: backend.https_calls(HOST, server_ca.pem, None, 1) == [REFUSED])
    anonymous = calls(server_ca.pem, None, REFUSED_CALLS, "MUTUAL, no client certificate")
    report.add(
        exact_check(
            "MUTUAL: calls without a client certificate refused", anonymous.count(REFUSED), REFUSED_CALLS, "every call"
        )
    )
    signed = calls(server_ca.pem, client, n, "MUTUAL, a client certificate the Secret's CA signed")
    report.add(
        all_check(
            "MUTUAL: calls with a signed client certificate answered 200", signed.count(OK), n, "be answered", MISS_RATE
        )
    )
    stray = calls(server_ca.pem, stray_client, REFUSED_CALLS, "MUTUAL, a client certificate of another CA")
    report.add(
        exact_check(
            "MUTUAL: calls with another CA's client certificate refused",
            stray.count(REFUSED),
            REFUSED_CALLS,
            "every call",
        )
    )
    report.phases.append(
        Phase(
            "MUTUAL",
            {
                "no certificate refused": anonymous.count(REFUSED),
                "signed answered": signed.count(OK),
                "other CA refused": stray.count(REFUSED),
            },
        )
    )

    with console.step("remove the Gateway, its route and the Secret (back to the baseline)"):
        backend.delete(GATEWAY)
        backend.delete(SECRET, dataclasses.replace(backend.options, ingress_tls=mutual))
    report.requests = 2 * n + 3 * REFUSED_CALLS
    return report
