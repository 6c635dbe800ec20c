"""The kind scenario backend: its commands, the surfaces it measures on, and how it parses them."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from meshy.metrics import istio
from meshy.metrics.prometheus import parse
from meshy.scenarios.backends import KindScenarioBackend, app_requests
from meshy.scenarios.traffic import get_request, send
from meshy.versions import select_pair
from tests.plan import Plan

# minimal-service's own counters (minimal_service/metrics.py): the retries are counted where they arrive.
APP_METRICS = """# TYPE minimal_service_requests_total counter
minimal_service_requests_total{path="/",method="GET",code="200"} 30
minimal_service_requests_total{path="/",method="GET",code="500"} 70
minimal_service_requests_total{path="/health",method="GET",code="200"} 12
"""
# Istio's standard metric on a gateway (reporter source), as served on stats/prometheus.
GATEWAY_METRICS = """# TYPE istio_requests_total counter
istio_requests_total{reporter="source",destination_service="minimal.external.kind.org",destination_service_name="minimal.external.kind.org",response_code="200"} 135
istio_requests_total{reporter="source",destination_service="other.example.org",destination_service_name="other.example.org",response_code="200"} 9
envoy_cluster_upstream_rq_total{envoy_cluster_name="xds-grpc"} 4
"""


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """The external container's files are made in the cache: a fresh one per test, not the project's."""
    monkeypatch.setenv("MESHY_CACHE", str(tmp_path))


def backend(plan: Plan) -> KindScenarioBackend:
    return KindScenarioBackend(plan.env(select_pair()))


def test_external_service_runs_on_the_kind_network_and_is_resolvable_through_the_service_entry():
    plan = Plan({r"Networks.kind.IPAddress": "172.18.0.9"})
    kind = backend(plan)
    run = next(c for c in plan.commands if c.startswith("docker run -d --network kind -e SERVICE_ADDRESS=0.0.0.0 "))
    # Also over TLS, with the files made in the cache mounted read-only and readable by their owner.
    assert run.endswith(" --name minimal-external localhost:5000/minimal-service:v1.0.0")
    assert f"--user {os.getuid()}:{os.getgid()} -v {kind.env.cache}/external-tls:/etc/external-tls:ro" in run
    assert (
        "-e TLS_PORT=9443 -e TLS_CERT_FILE=/etc/external-tls/tls.crt -e TLS_KEY_FILE=/etc/external-tls/tls.key" in run
    )
    assert sorted(p.name for p in (kind.env.cache / "external-tls").iterdir()) == [
        "ca.crt", "other-ca.crt", "tls.crt", "tls.key",
    ]  # fmt: skip
    kind.apply("istio/service-entry.yaml.j2")
    command, stdin = plan.calls[-1]
    assert command == "kubectl --context kind-kube-meshy-1-36 apply -f -"
    # `addresses` puts the host into the sidecars' DNS table; the endpoint is where calls go.
    assert "addresses:\n    - 172.18.0.9" in stdin and "resolution: STATIC" in stdin and "address: 172.18.0.9" in stdin


def test_deployments_are_awaited_and_deletes_tolerate_absence():
    plan = Plan({r"Status": "Up 2 minutes", r"IPAddress": "172.18.0.9"})
    kind = backend(plan)
    kind.apply("services/minimal-service-v2.yaml.j2")
    assert (
        plan.commands[-1]
        == "kubectl --context kind-kube-meshy-1-36 rollout status deploy/minimal-service-v2 --timeout=300s"
    )
    kind.delete("istio/minimal-destinationrule.yaml.j2")
    assert plan.commands[-1] == "kubectl --context kind-kube-meshy-1-36 delete --ignore-not-found -f -"


def test_measurements_come_from_surfaces_istio_serves_by_default():
    plan = Plan(
        {
            r"Status": "Up 2 minutes",
            r"IPAddress": "172.18.0.9",
            r"proxy/metrics": APP_METRICS,
            r"GET stats/prometheus": GATEWAY_METRICS,
        }
    )
    kind = backend(plan)
    assert app_requests(kind.app_metrics("bounced-service"), "/") == 100  # probes (/health) left out
    assert plan.commands[-1] == (
        "kubectl --context kind-kube-meshy-1-36 get --raw /api/v1/namespaces/default/services/bounced-service:http/proxy/metrics"
    )
    assert kind.gateway_requests("istio-egressgateway", "minimal.external.kind.org") == 135
    assert plan.commands[-1] == (
        "kubectl --context kind-kube-meshy-1-36 -n istio-system exec deploy/istio-egressgateway -c istio-proxy "
        "-- pilot-agent request GET stats/prometheus"
    )
    # A sidecar's own reports (circuit-breaking's UO flags) come the same way, from the app's namespace.
    kind.proxy_metrics("minimal-service")
    assert plan.commands[-1] == (
        "kubectl --context kind-kube-meshy-1-36 -n default exec deploy/minimal-service -c istio-proxy "
        "-- pilot-agent request GET stats/prometheus"
    )
    # Envoy's per-cluster counters are not kept by Istio's default stats matcher: never read them.
    assert not [c for c in plan.commands if c.endswith("GET stats")]
    # Each sidecar serves its own reports: one read per workload, in the order asked.
    before = len(plan.commands)
    samples = kind.istio_metrics("minimal-service", "bounced-service")
    assert plan.commands[before:] == [
        f"kubectl --context kind-kube-meshy-1-36 -n default exec deploy/{name} -c istio-proxy "
        "-- pilot-agent request GET stats/prometheus"
        for name in ("minimal-service", "bounced-service")
    ]
    assert istio.requests(samples, "minimal.external.kind.org") == 2 * 135


def test_parsers_ignore_other_series():
    assert istio.requests(parse(GATEWAY_METRICS), "nowhere.example.org") == 0
    assert app_requests(APP_METRICS, "/health") == 12
    assert app_requests("", "/") == 0


def test_selector_patch_only_when_the_label_is_there():
    plan = Plan(
        {r"Status": "Up", r"IPAddress": "172.18.0.9", r"spec.selector": '{"app":"minimal-service","version":"v1"}'}
    )
    kind = backend(plan)
    kind.remove_selector_label("minimal-service", "version")
    assert plan.commands[-1].startswith("kubectl --context kind-kube-meshy-1-36 patch svc minimal-service --type json")
    plan.answers[r"spec.selector"] = '{"app":"minimal-service"}'
    before = len(plan.commands)
    kind.remove_selector_label("minimal-service", "version")
    assert len(plan.commands) == before + 1  # only the read
    assert kind.ingress == "http://127.0.0.1:8080"


def test_dry_backend_sends_nothing_and_checks_once():
    plan = Plan()
    kind = KindScenarioBackend(plan.env(select_pair(), dry=True))
    assert kind.ingress.endswith(":8080")
    results = kind.send(get_request(kind.ingress, "minimal.svc.kind.org"), 5)
    assert [r.status for r in results] == [0] * 5
    checks = []
    assert kind.poll(lambda: checks.append(1) or False, timeout=30)
    assert checks == [1]


def test_a_redirect_is_an_answer_not_a_hop():
    class Kiali(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(302 if self.path == "/" else 200)
            self.send_header("Location", "/kiali/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Kiali)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert [r.status for r in send(get_request(url, "kiali.istio.kind.org"), 3)] == [302, 302, 302]
    finally:
        server.shutdown()
