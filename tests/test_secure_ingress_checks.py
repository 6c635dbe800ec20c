"""The secure-ingress scenario's verdict: a gateway terminating TLS as Istio does passes, each way of breaking it fails.

A scripted backend stands in for the gateway here (the verdict is what is under test); the scenario runs on
real Envoy in e2e-local, and tests/test_gateway_tls.py checks the gateway's TLS on real Envoy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from meshy.console import Console
from meshy.render import RenderOptions
from meshy.scenarios import secure_ingress
from meshy.scenarios.certificates import Issued
from meshy.scenarios.https import OK, REFUSED, UNTRUSTED
from meshy.versions import select_pair


@dataclass
class ScriptedGateway:
    """Answers HTTPS calls as the gateway would for the applied mode, with one behaviour broken on request."""

    broken: str = ""
    name: str = "local"
    pair: object = field(default_factory=select_pair)
    options: RenderOptions = field(default_factory=RenderOptions)
    mode: str = ""
    issuer: str = ""  # the CA of the certificate the gateway serves
    client_ca: str = ""
    signed: Issued | None = None  # the client certificate the Secret's CA signed

    def apply(self, template: str, options: RenderOptions | None = None) -> None:
        tls = (options or self.options).ingress_tls
        if template == secure_ingress.GATEWAY:
            self.mode = tls.mode
        elif template == secure_ingress.SECRET:
            self.client_ca = tls.ca

    def delete(self, template: str, options: RenderOptions | None = None) -> None:
        self.mode = ""

    def poll(self, check, timeout: float) -> bool:
        return bool(check())

    def https_calls(self, host: str, trust: str, client: Issued | None, n: int) -> list[str]:
        return [self.one(trust, client) for _ in range(n)]

    def one(self, trust: str, client: Issued | None) -> str:
        if not self.mode:
            return REFUSED
        # The scenario's first call trusts the CA that signed the served certificate; the first client
        # certificate it shows is the one the Secret's CA signed (the stray one comes after).
        self.issuer = self.issuer or trust
        if trust != self.issuer or self.broken == "wrong certificate":
            return UNTRUSTED
        if self.mode != "MUTUAL" or self.broken == "mutual ignored":
            return OK
        if client is None:
            return REFUSED
        self.signed = self.signed or client
        return OK if client is self.signed or self.broken == "any client certificate" else REFUSED


def test_a_gateway_that_terminates_tls_as_istio_does_passes():
    report = secure_ingress.run(ScriptedGateway(), Console(quiet=True))
    assert report.passed, [c for c in report.checks if not c.passed]
    assert len(report.checks) == 5


@pytest.mark.parametrize("broken", ["wrong certificate", "mutual ignored", "any client certificate"])
def test_each_broken_behaviour_fails_the_verdict(broken):
    report = secure_ingress.run(ScriptedGateway(broken), Console(quiet=True))
    assert not report.passed
