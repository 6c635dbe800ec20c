"""scenario.*: each walkthrough section measured and judged; exits non-zero when a verdict fails."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke import Context
from invoke.exceptions import Exit

from meshy.tasks.common import PAIR_HELP, TaskError, cluster_env, is_dry, pair_of
from meshy.tasks.runner import task

if TYPE_CHECKING:
    from meshy.scenarios.verdict import Report

HELP = {
    **PAIR_HELP,
    "backend": "local (default: real Envoy proxies, no cluster) or kind (a cluster built by inv up)",
    "state": "local backend state directory (default .meshy/; env MESHY_STATE)",
}


def make_backend(c: Context, backend: str, k8s: str | None, istio: str | None, state: str | None = None):
    """The scenario backend, brought up first if it is the local one."""
    from meshy.local.backend import LocalBackend, LocalConfig
    from meshy.scenarios.backends import KindScenarioBackend, LocalScenarioBackend

    if backend == "local":
        pair = pair_of(k8s, istio)
        local = LocalBackend(LocalConfig.from_env(state))
        local.refuse_other_mesh(pair, ingress_asked=False)
        local.up(pair)
        return LocalScenarioBackend(local, pair)
    if backend == "kind":
        from meshy.kind.context import require_tools

        env = cluster_env(c, k8s, istio)
        require_tools(env, "docker", "kubectl")
        return KindScenarioBackend(env)
    raise TaskError(f"--backend {backend!r} is not known; use local or kind.")


def run_scenarios(c: Context, names: list[str], backend: str, k8s, istio, state=None) -> list[Report]:
    """Run the scenarios; on the local backend the mesh's resources are put back afterwards, also on Ctrl-C."""
    from meshy.console import Console
    from meshy.render import build_dir
    from meshy.scenarios import runner
    from meshy.scenarios.changes import RecordingBackend

    if is_dry(c) and backend == "kind":
        target = make_backend(c, backend, k8s, istio, state)
        for name in names:
            with target.env.console.step(f"scenario {name} (dry run: commands only, no traffic, no verdict)"):
                runner.SCENARIOS[name](target, target.env.console)
        return []
    if is_dry(c):
        print(f"would run scenario(s) {', '.join(names)} on the {backend} backend and write reports/{backend}/")
        return []
    target = make_backend(c, backend, k8s, istio, state)
    console = Console()
    local = getattr(target, "local", None)
    if local is None:
        target = RecordingBackend(target)
    before = local.resources() if local else None
    try:
        return [runner.run(name, target, console) for name in names]
    finally:
        if local:
            target.close()
            for line in local.restore(before):
                console.info(f"put back as before the scenario: {line}")
        elif target.changes:
            console.info(target.summary(str(build_dir(target.pair))))


def judge(results: list[Report]) -> None:
    failed = [r.scenario for r in results if not r.passed]
    if failed:
        raise Exit(f"verdict failed: {', '.join(failed)} (see reports/)", code=1)


@task(help=HELP)
def gateway(c, backend="local", k8s=None, istio=None, state=None):
    """Host-based routing through the ingress gateway; unknown hosts get 404."""
    judge(run_scenarios(c, ["gateway"], backend, k8s, istio, state))


@task(help=HELP)
def retries(c, backend="local", k8s=None, istio=None, state=None):
    """Bounce to bounced-service (70% 500s) before and after a 20-attempt retry policy."""
    judge(run_scenarios(c, ["retries"], backend, k8s, istio, state))


@task(help=HELP)
def traffic_shift(c, backend="local", k8s=None, istio=None, state=None):
    """v1/v2 split 50/50, then a canary walk 90/10 -> 50/50 -> 0/100, each judged by chi-square."""
    judge(run_scenarios(c, ["traffic-shift"], backend, k8s, istio, state))


@task(help=HELP)
def egress(c, backend="local", k8s=None, istio=None, state=None):
    """A call out of the mesh: fails without a ServiceEntry, passes through the egress gateway with one."""
    judge(run_scenarios(c, ["egress"], backend, k8s, istio, state))


@task(help=HELP)
def request_timeouts(c, backend="local", k8s=None, istio=None, state=None):
    """Calls to a slow service before and after a 100 ms route timeout: cut with 504 at the timeout."""
    judge(run_scenarios(c, ["request-timeouts"], backend, k8s, istio, state))


@task(help=HELP)
def fault_injection(c, backend="local", k8s=None, istio=None, state=None):
    """Delay and abort half the requests at the ingress gateway; without `percentage`, none."""
    judge(run_scenarios(c, ["fault-injection"], backend, k8s, istio, state))


@task(help=HELP)
def mirroring(c, backend="local", k8s=None, istio=None, state=None):
    """Every request to v1 mirrored to minimal-service-v2: the caller sees v1, v2 counts each copy once."""
    judge(run_scenarios(c, ["mirroring"], backend, k8s, istio, state))


@task(help=HELP)
def circuit_breaking(c, backend="local", k8s=None, istio=None, state=None):
    """Twelve callers at once against a one-connection pool: the sidecar sheds the rest with 503 and UO."""
    judge(run_scenarios(c, ["circuit-breaking"], backend, k8s, istio, state))


@task(help=HELP)
def outlier_detection(c, backend="local", k8s=None, istio=None, state=None):
    """A pod answering 500 to everything: about half the calls fail, then none once it is ejected."""
    judge(run_scenarios(c, ["outlier-detection"], backend, k8s, istio, state))


@task(help=HELP)
def mtls(c, backend="local", k8s=None, istio=None, state=None):
    """PeerAuthentication PERMISSIVE vs STRICT, the caller's SPIFFE identity, DestinationRule tls DISABLE."""
    judge(run_scenarios(c, ["mtls"], backend, k8s, istio, state))


@task(help=HELP)
def authorization(c, backend="local", k8s=None, istio=None, state=None):
    """AuthorizationPolicy DENY by path, method and header, ALLOW by source principal: 403 RBAC: access denied."""
    judge(run_scenarios(c, ["authorization"], backend, k8s, istio, state))


@task(help=HELP)
def secure_ingress(c, backend="local", k8s=None, istio=None, state=None):
    """HTTPS on the ingress gateway from a Secret: SIMPLE verified by the client, MUTUAL asks for its certificate."""
    judge(run_scenarios(c, ["secure-ingress"], backend, k8s, istio, state))


@task(help=HELP)
def tcp_traffic_shifting(c, backend="local", k8s=None, istio=None, state=None):
    """A tcp route on the ingress gateway's port 31400: connections all to v1, then split 80/20 with v2."""
    judge(run_scenarios(c, ["tcp-traffic-shifting"], backend, k8s, istio, state))


@task(help=HELP)
def request_authentication(c, backend="local", k8s=None, istio=None, state=None):
    """RequestAuthentication (JWT): invalid tokens 401, none passes; with a policy, alice or group admins only."""
    judge(run_scenarios(c, ["request-authentication"], backend, k8s, istio, state))


@task(help=HELP)
def tls_origination(c, backend="local", k8s=None, istio=None, state=None):
    """The app calls http:// an external host; a DestinationRule tls SIMPLE makes its sidecar speak TLS to it."""
    judge(run_scenarios(c, ["tls-origination"], backend, k8s, istio, state))


@task(help=HELP)
def ingress_passthrough(c, backend="local", k8s=None, istio=None, state=None):
    """The ingress gateway passes TLS on port 443 through to the external service by SNI (tls.mode PASSTHROUGH)."""
    judge(run_scenarios(c, ["ingress-passthrough"], backend, k8s, istio, state))
