"""The ingress-passthrough scenario's verdict: a gateway that passes TLS through as Istio does passes, each way
of breaking it fails.

A scripted backend stands in for the gateway and the external service here (the verdict is what is under
test); the scenario runs on real Envoy in e2e-local, and tests/test_passthrough.py checks the gateway's
chains on real Envoy against the real external TLS service.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from meshy.console import Console
from meshy.render import RenderOptions
from meshy.scenarios import ingress_passthrough
from meshy.scenarios.https import OK, REFUSED, UNTRUSTED
from meshy.versions import select_pair

EXTERNAL_CA, OTHER_CA, GATEWAY_CA = "EXTERNAL CA", "OTHER CA", "GATEWAY CA"


@dataclass
class ScriptedPassthrough:
    """Answers HTTPS calls as the ingress gateway and the external service would, one behaviour broken on request."""

    broken: str = ""
    name: str = "local"
    pair: object = field(default_factory=select_pair)
    options: RenderOptions = field(default_factory=RenderOptions)
    applied: bool = False
    log: list[str] = field(default_factory=list)

    def external_cas(self) -> tuple[str, str]:
        return EXTERNAL_CA, OTHER_CA

    def apply(self, template: str, options: RenderOptions | None = None) -> None:
        self.applied = self.applied or template == ingress_passthrough.TEMPLATE

    def delete(self, template: str, options: RenderOptions | None = None) -> None:
        self.applied = self.applied and template != ingress_passthrough.TEMPLATE

    def poll(self, check, timeout: float) -> bool:
        return bool(check())

    def external_log(self) -> str:
        return "\n".join(self.log)

    def https_calls(self, host: str, trust: str, client, n: int) -> list[str]:
        return [self.one(host, trust) for _ in range(n)]

    def one(self, host: str, trust: str) -> str:
        routed = self.applied and (host == self.options.external.host or self.broken == "unmatched routed")
        if not routed:
            return REFUSED  # no filter chain for the name: the handshake ends
        # Terminating at the gateway, the client sees the gateway's certificate and the service plain HTTP.
        signer = GATEWAY_CA if self.broken == "terminates" else EXTERNAL_CA
        if trust != signer or host != self.options.external.host:
            return UNTRUSTED
        tls = self.broken not in ("terminates", "plain upstream")
        if self.broken != "not logged":
            self.log.append(f"[INFO] [GET / 127.0.0.1:4000{' tls' if tls else ''}] 200")
        return OK


def test_a_gateway_that_passes_tls_through_as_istio_does_passes():
    report = ingress_passthrough.run(ScriptedPassthrough(), Console(quiet=True))
    assert report.passed, [c for c in report.checks if not c.passed]
    assert len(report.checks) == 6


@pytest.mark.parametrize("broken", ["terminates", "unmatched routed", "plain upstream", "not logged"])
def test_each_broken_behaviour_fails_the_verdict(broken):
    report = ingress_passthrough.run(ScriptedPassthrough(broken), Console(quiet=True))
    assert not report.passed


def test_the_gateway_terminating_with_a_certificate_the_client_trusts_still_fails():
    # Even trusted, a terminating gateway leaves the service plain HTTP requests: the log check catches it.
    backend = ScriptedPassthrough("plain upstream")
    report = ingress_passthrough.run(backend, Console(quiet=True))
    failed = {c.name for c in report.checks if not c.passed}
    assert failed == {
        "requests the external service logged over TLS",
        "requests the external service logged in plain HTTP",
    }
