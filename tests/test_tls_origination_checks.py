"""The tls-origination scenario's verdict: a sidecar that originates TLS as Istio does passes, each way of
breaking it fails.

A scripted backend stands in for the sidecar and the external service here (the verdict is what is under
test); the scenario runs on real Envoy in e2e-local, and tests/test_origination.py checks the sidecar's TLS on
real Envoy against a real TLS server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from meshy.console import Console
from meshy.render import RenderOptions
from meshy.scenarios import tls_origination
from meshy.scenarios.traffic import Result
from meshy.versions import select_pair


@dataclass
class ScriptedOrigination:
    """Answers the app's calls as its sidecar and the external service would, one behaviour broken on request."""

    broken: str = ""
    name: str = "local"
    pair: object = field(default_factory=select_pair)
    options: RenderOptions = field(default_factory=RenderOptions)
    ingress: str = "http://127.0.0.1:1"
    trust: str = ""  # the CA file the applied DestinationRule names; "" without one
    log: list[str] = field(default_factory=list)

    def external_cas(self) -> tuple[str, str]:
        return "SIGNING CA", "OTHER CA"

    def apply(self, template: str, options: RenderOptions | None = None) -> None:
        if template == tls_origination.RULE:
            self.trust = (options or self.options).external_tls.trust

    def delete(self, template: str, options: RenderOptions | None = None) -> None:
        if template == tls_origination.RULE:
            self.trust = ""

    def poll(self, check, timeout: float) -> bool:
        return bool(check())

    def external_log(self) -> str:
        return "\n".join(self.log)

    def send(self, request, n: int, progress=None, workers: int = 1) -> list[Result]:
        return [self.one() for _ in range(n)]

    def one(self) -> Result:
        originates = bool(self.trust) != (self.broken == "origination ignored") or self.broken == "always tls"
        verifies = self.broken != "certificate not checked"
        if not originates:
            if self.broken == "plain reaches the service":
                return self.answer(tls=False)
            return self.answer(status="503 Service Unavailable")  # plain HTTP to a TLS port
        if verifies and self.trust != "ca.crt" and self.broken != "always tls":
            return self.answer(status="503 Service Unavailable")  # the certificate is refused
        if self.broken == "tls not seen":
            return self.answer(tls=False)
        return self.answer(tls=True)

    def answer(self, status: str = "200 OK", tls: bool = False) -> Result:
        if status == "200 OK":
            self.log.append(f"[INFO] [GET /tls-origination 127.0.0.1:4000{' tls' if tls else ''}] 200")
        return Result(200, json.dumps({"body": status}), 0.0)


def test_a_sidecar_that_originates_tls_as_istio_does_passes():
    report = tls_origination.run(ScriptedOrigination(), Console(quiet=True))
    assert report.passed, [c for c in report.checks if not c.passed]
    assert len(report.checks) == 7


@pytest.mark.parametrize(
    "broken",
    ["origination ignored", "plain reaches the service", "certificate not checked", "tls not seen", "always tls"],
)
def test_each_broken_behaviour_fails_the_verdict(broken):
    report = tls_origination.run(ScriptedOrigination(broken), Console(quiet=True))
    assert not report.passed
