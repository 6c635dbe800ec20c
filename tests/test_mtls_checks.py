"""The mtls scenario's verdict: a mesh doing what Istio does passes, each way of breaking mTLS fails.

A scripted backend stands in for the mesh here (the verdict arithmetic is what is under test); the
scenario itself runs on real Envoy in e2e-local and tests/test_local_security_live.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from meshy.console import Console
from meshy.render import RenderOptions
from meshy.scenarios import mtls
from meshy.scenarios.traffic import Request, Result
from meshy.versions import select_pair


@dataclass
class ScriptedMesh:
    """Answers as a mesh would, given the applied mode and rule, with one behaviour broken on request."""

    broken: str = ""
    name: str = "local"
    pair: object = field(default_factory=select_pair)
    options: RenderOptions = field(default_factory=RenderOptions)
    mode: str = "PERMISSIVE"
    plaintext_rule: bool = False
    counted: int = 0

    @property
    def ingress(self) -> str:
        return "http://127.0.0.1:1"

    def apply(self, template: str, options: RenderOptions | None = None) -> None:
        if template == mtls.PEER_AUTHENTICATION:
            self.mode = (options or self.options).mtls_mode
        elif template == mtls.PLAINTEXT_RULE:
            self.plaintext_rule = True

    def delete(self, template: str, options: RenderOptions | None = None) -> None:
        if template == mtls.PEER_AUTHENTICATION:
            self.mode = "PERMISSIVE"
        elif template == mtls.PLAINTEXT_RULE:
            self.plaintext_rule = False

    def poll(self, check, timeout: float) -> bool:
        return bool(check())

    def outside_call(self, service: str) -> bool:
        return self.mode != "STRICT" or self.broken == "strict ignored"

    def destination_requests(self, workload: str, **labels: str) -> int:
        return self.counted

    def send(self, request: Request, n: int, progress=None, workers: int = 1) -> list[Result]:
        return [self.one(request) for _ in range(n)]

    def one(self, request: Request) -> Result:
        if request.method == "GET":
            uri = "" if self.broken == "no identity" else f";URI={mtls.GATEWAY_ID}"
            headers = {"X-Forwarded-Client-Cert": f"By={mtls.CALLER_ID};Hash=ab{uri}"}
            return Result(200, json.dumps({"headers": headers}), 0.001)
        refused = self.plaintext_rule and self.mode == "STRICT" and self.broken != "rule ignored"
        if not refused and self.broken != "plaintext between sidecars":
            self.counted += 1
        body = "503 Service Unavailable" if refused else "500 Internal Server Error"
        return Result(200, json.dumps({"body": body}), 0.001)


def test_a_mesh_doing_what_istio_does_passes():
    report = mtls.run(ScriptedMesh(), Console(quiet=True))
    assert report.passed, [c for c in report.checks if not c.passed]
    assert len(report.checks) == 7


@pytest.mark.parametrize("broken", ["strict ignored", "no identity", "plaintext between sidecars", "rule ignored"])
def test_each_broken_behaviour_fails_the_verdict(broken):
    report = mtls.run(ScriptedMesh(broken), Console(quiet=True))
    assert not report.passed
    assert sum(not c.passed for c in report.checks) >= 1


def test_the_identity_is_read_from_the_answering_sidecars_element():
    # Two hops: the last element is the one the answering sidecar added.
    header = f"By=a;URI=spiffe://cluster.local/ns/x/sa/y,By={mtls.CALLER_ID};Hash=1;URI={mtls.GATEWAY_ID}"
    result = Result(200, json.dumps({"headers": {"X-Forwarded-Client-Cert": header}}), 0.0)
    assert mtls.caller_identity(result) == mtls.GATEWAY_ID
    assert mtls.caller_identity(Result(503, "", 0.0)) is None
    assert mtls.caller_identity(Result(200, json.dumps({"headers": {}}), 0.0)) is None
