"""The authorization scenario's verdict: policies enforced as Istio does pass, a policy ignored fails.

A scripted backend stands in for the mesh (the verdict is under test); the scenario runs on real Envoy
in e2e-local and tests/test_local_security_live.py checks the 403s themselves.
"""

from __future__ import annotations

import json

import pytest

from meshy.console import Console
from meshy.scenarios import authorization
from meshy.scenarios.traffic import Request, Result
from tests.test_mtls_checks import ScriptedMesh

FORBIDDEN = Result(403, authorization.DENIED, 0.001)


class ScriptedAuthz(ScriptedMesh):
    """Answers as a mesh enforcing the scenario's two policies would, with one behaviour broken on request."""

    def __init__(self, broken: str = "") -> None:
        super().__init__(broken)
        self.applied: set[str] = set()

    def apply(self, template, options=None) -> None:
        self.applied.add(template)

    def delete(self, template, options=None) -> None:
        self.applied.discard(template)

    def outside_call(self, service: str) -> bool:
        return authorization.ALLOW not in self.applied or self.broken == "allow ignored"

    def one(self, request: Request) -> Result:
        enforced = authorization.DENY in self.applied and self.broken != "deny ignored"
        if request.method == "POST":
            if self.broken == "allow refuses the mesh":
                return Result(200, json.dumps({"body": "403 Forbidden"}), 0.001)
            return Result(200, json.dumps({"body": "200 OK"}), 0.001)
        refused = request.method == "DELETE" or "/admin" in request.url or request.headers.get("x-block") == "yes"
        if enforced and refused:
            return FORBIDDEN
        return Result(200, "{}", 0.001)


def test_enforced_policies_pass():
    report = authorization.run(ScriptedAuthz(), Console(quiet=True))
    assert report.passed, [c for c in report.checks if not c.passed]
    assert len(report.checks) == 6


@pytest.mark.parametrize("broken", ["deny ignored", "allow ignored", "allow refuses the mesh"])
def test_a_policy_not_enforced_as_istio_does_fails(broken):
    report = authorization.run(ScriptedAuthz(broken), Console(quiet=True))
    assert not report.passed


def test_only_envoys_rbac_answer_counts_as_denied():
    assert authorization.denied(FORBIDDEN)
    assert not authorization.denied(Result(403, "Forbidden", 0.0))  # the app's own 403 is not the policy's
    assert not authorization.denied(Result(200, authorization.DENIED, 0.0))
