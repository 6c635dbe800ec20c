"""The local backend on real Envoy with real HTTP: each supported feature shows Istio's behaviour."""

from __future__ import annotations

import statistics
import threading
import time

import pytest
import requests

from meshy import stats
from meshy.local.resources import ResourceError
from meshy.scenarios.verdict import ALPHA
from tests.local_mesh import Mesh, running


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with running(tmp_path_factory.mktemp("mesh") / "state") as m:
        yield m


@pytest.fixture
def clean(mesh):
    """Each test starts from, and returns to, the walkthrough's baseline."""
    yield mesh
    baseline = ["services/minimal-service.yaml.j2", "istio/minimal-virtualservice.yaml.j2"]
    for name in baseline:
        mesh.apply_template(name)
    for kind, name in [
        ("VirtualService", "web-vs"),
        ("DestinationRule", "minimal-destinationrule"),
        ("VirtualService", "bounced-virtualservice-retries"),
    ]:
        api = "networking.istio.io/v1"
        mesh.delete(f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}, namespace: default}}\n")


def vs(http: str, hosts: str = "[minimal.svc.kind.org]", gateways: str = "[services-gateway]") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: minimal-virtualservice, namespace: default}}
spec:
  hosts: {hosts}
  gateways: {gateways}
  http:
{http}
"""


def test_gateway_routes_known_hosts_and_404s_unknown(clean):
    response = clean.get()
    assert response.status_code == 200
    assert response.json()["servedBy"].startswith("minimal-service-")
    # Istio's gateways answer as istio-envoy and upstreams see the attempt count (see test_local_istio_semantics).
    assert response.headers["server"] == "istio-envoy"
    assert response.json()["headers"]["X-Envoy-Attempt-Count"] == "1"
    # Gateways take the client as the remote address (use_remote_address), as Istio's do: the app
    # sees the client in x-forwarded-for (its value is whatever address this machine's loopback shows).
    assert response.json()["headers"]["X-Forwarded-For"]
    assert clean.get(host="nobody.svc.kind.org").status_code == 404


def test_weighted_split_within_statistical_bound(clean):
    clean.backend.remove_selector_label("minimal-service", "version")
    clean.apply_template("istio/minimal-destinationrule.yaml.j2")
    clean.apply_template("istio/minimal-virtualservice-split.yaml.j2", split={"v1": 80, "v2": 20})
    n = stats.proportion_sample_size(0.8, 0.7, ALPHA, 0.999)
    served = [clean.get().json()["servedBy"] for _ in range(n)]
    v1 = sum(1 for s in served if not s.startswith("minimal-service-v2-"))
    assert 0.8 in stats.wilson(v1, n, ALPHA)


def test_subset_without_endpoints_answers_503(clean):
    # The Service still selects version v1 only, so subset v2 has no endpoints (as in Istio).
    clean.apply_template("istio/minimal-destinationrule.yaml.j2")
    clean.apply_template("istio/minimal-virtualservice-split.yaml.j2", split={"v1": 0, "v2": 100})
    response = clean.get()
    assert response.status_code == 503
    assert "no healthy upstream" in response.text


def test_outlier_ejection_of_the_only_pod_answers_503(clean):
    # Istio sets healthy_panic_threshold 0: once bounced-service's only pod is ejected, callers get
    # 503 instead of Envoy's panic routing to it (cluster_traffic_policy.go applyOutlierDetection).
    # maxEjectionPercent 100: with Envoy's default of 10% one host of one is never ejected.
    rule = (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bounced-outlier}\n"
        "spec: {host: bounced-service, trafficPolicy: {outlierDetection: "
        "{consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}}}\n"
    )
    clean.apply(rule)
    try:
        bodies = [clean.bounce("http://bounced-service:9090").json()["body"] for _ in range(40)]
    finally:
        clean.delete(rule)
    # Each minimal-service pod's sidecar ejects on the first 500 it sees; after the last
    # 20 calls nothing but 503 may come back (P(a caller saw no 500 in 20 calls) < 1e-10).
    assert "500 Internal Server Error" in bodies[:20]
    assert all(body.startswith("503") for body in bodies[-20:]), bodies


def test_direct_response_cors_and_without_headers_on_real_envoy(clean):
    clean.apply(
        vs(
            "    - match: [{uri: {exact: /teapot}}]\n"
            "      directResponse: {status: 418, body: {string: short and stout}}\n"
            "    - match: [{uri: {prefix: /}, withoutHeaders: {x-block: {}}}]\n"
            "      corsPolicy: {allowOrigins: [{exact: 'https://ok.example.org'}], allowMethods: [GET], maxAge: 1h}\n"
            "      route: [{destination: {host: minimal-service}}]\n"
            "    - route: [{destination: {host: bounced-service}}]"
        )
    )
    teapot = clean.get("/teapot")
    assert (teapot.status_code, teapot.text) == (418, "short and stout")
    preflight = clean.session.options(
        clean.backend.ingress_url + "/",
        headers={
            "Host": "minimal.svc.kind.org",
            "Origin": "https://ok.example.org",
            "Access-Control-Request-Method": "GET",
        },
        timeout=10,
    )
    assert preflight.headers["access-control-allow-origin"] == "https://ok.example.org"
    assert preflight.headers["access-control-max-age"] == "3600"
    assert clean.get("/").json()["servedBy"].startswith("minimal-service-")
    blocked = clean.get("/", headers={"x-block": "1"})
    assert blocked.status_code == 500 or blocked.json()["servedBy"].startswith("bounced-service-")


def test_retries_turn_70_percent_failures_into_successes(clean):
    n = 200
    before = sum(clean.bounce("http://bounced-service:9090").json()["body"] == "200 OK" for _ in range(n))
    assert 0.30 in stats.wilson(before, n, ALPHA)
    clean.apply_template("istio/bounced-virtualservice-retries.yaml.j2")
    # 1 - 0.7^21 = 0.9994: 60 calls hold at most one failure unless retries are broken.
    after = sum(clean.bounce("http://bounced-service:9090").json()["body"] == "200 OK" for _ in range(60))
    assert after >= 59


def test_fault_delay_is_visible_in_latency(clean):
    baseline = [timed(clean.get) for _ in range(10)]
    clean.apply(
        vs(
            "    - fault: {delay: {fixedDelay: 250ms, percentage: {value: 100}}}\n      route: [{destination: {host: minimal-service}}]"
        )
    )
    delayed = [timed(clean.get) for _ in range(10)]
    assert statistics.median(baseline) < 0.1
    # Envoy's dispatcher caches the time it arms a timer with, so a 250 ms delay can end a
    # millisecond or so early by the client's clock (seen: 249.4 ms); far above the baseline.
    assert min(delayed) >= 0.245


def test_fault_abort_is_visible_in_codes(clean):
    clean.apply(
        vs(
            "    - fault: {abort: {httpStatus: 418, percentage: {value: 50}}}\n      route: [{destination: {host: minimal-service}}]"
        )
    )
    n = stats.proportion_sample_size(0.5, 0.6, ALPHA, 0.999)
    codes = [clean.get().status_code for _ in range(n)]
    assert set(codes) == {200, 418}
    assert 0.5 in stats.wilson(codes.count(418), n, ALPHA)


def test_mirror_is_seen_on_the_mirror_target(clean):
    def bounced_requests() -> int:
        pod = next(p for p in clean.backend.pods() if p.deployment == "bounced-service")
        text = requests.get(f"http://{pod.app_ip}:9090/metrics", timeout=5, proxies={"http": ""}).text
        return sum(
            int(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('minimal_service_requests_total{path="/mirrored"')
        )

    clean.apply(
        vs(
            "    - mirror: {host: bounced-service}\n      mirrorPercentage: {value: 100}\n      route: [{destination: {host: minimal-service}}]"
        )
    )
    start = bounced_requests()
    for _ in range(20):
        assert clean.get("/mirrored").status_code == 200
    deadline = time.monotonic() + 5
    while bounced_requests() - start < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bounced_requests() - start == 20


def test_headers_rewrite_and_redirect(clean):
    clean.apply(
        vs(
            "    - match: [{uri: {prefix: /old}}]\n"
            "      rewrite: {uri: /new}\n"
            "      headers:\n"
            "        request: {set: {x-added: 'yes'}, remove: [x-drop]}\n"
            "        response: {set: {x-served-by-mesh: local}}\n"
            "      route: [{destination: {host: minimal-service}}]\n"
            "    - match: [{uri: {exact: /go}}]\n"
            "      redirect: {uri: /landing, redirectCode: 302}\n"
            "    - match: [{headers: {x-canary: {exact: 'yes'}}, method: {exact: GET}}]\n"
            "      route: [{destination: {host: bounced-service}}]\n"
            "    - route: [{destination: {host: minimal-service}}]"
        )
    )
    echoed = clean.get("/old/page", headers={"x-drop": "1"})
    body = echoed.json()
    assert body["requestURI"] == "/new/page"
    assert body["headers"]["X-Added"] == "yes" and "X-Drop" not in body["headers"]
    assert echoed.headers["x-served-by-mesh"] == "local"
    redirect = clean.get("/go", allow_redirects=False)
    assert redirect.status_code == 302 and redirect.headers["location"].endswith("/landing")
    canary = clean.get("/", headers={"x-canary": "yes"})
    assert canary.status_code in (200, 500)  # bounced-service answers 500 to 70%
    assert canary.status_code == 500 or canary.json()["servedBy"].startswith("bounced-service-")


def test_route_timeout_gives_504_and_no_timeout_by_default(clean):
    slow = SLOW_SERVICE
    clean.apply(slow)
    # Istio sets no route timeout unless asked: delays up to 0.6 s all succeed.
    assert [clean.bounce("http://slow-service:9090").json()["body"] for _ in range(8)] == ["200 OK"] * 8
    clean.apply(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web-vs, namespace: default}\n"
        "spec:\n  hosts: [slow-service]\n  http:\n    - timeout: 100ms\n      retries: {attempts: 0}\n"
        "      route: [{destination: {host: slow-service}}]\n"
    )
    bodies = [clean.bounce("http://slow-service:9090").json()["body"] for _ in range(20)]
    # Delays are uniform on [0, 0.6 s]: about 5 in 6 exceed 100 ms; fewer than 10 of 20 has p < 1e-4.
    assert set(bodies) <= {"504 Gateway Timeout", "200 OK"}
    assert bodies.count("504 Gateway Timeout") >= 10
    clean.delete(slow)


def test_circuit_breaker_limits_concurrency(clean):
    clean.apply(SLOW_SERVICE)
    clean.apply(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: minimal-destinationrule, namespace: default}\n"
        "spec:\n  host: slow-service\n  trafficPolicy:\n    connectionPool:\n"
        "      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1, maxRetries: 0}\n"
    )
    results: list[str] = []

    def call():
        results.append(clean.bounce("http://slow-service:9090").json()["body"])

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One in flight and one pending at most; Envoy sheds the rest with 503 (overflow).
    assert results.count("503 Service Unavailable") >= 4
    assert "200 OK" in results
    clean.delete(SLOW_SERVICE)


def test_service_entry_static_reaches_a_host_outside_the_mesh(clean):
    external = clean.backend.layout.external_ip
    entry = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: static-external, namespace: default}\n"
        f"spec:\n  hosts: [static.example.org]\n  ports: [{{number: 9090, name: http, protocol: HTTP}}]\n"
        f"  resolution: STATIC\n  endpoints: [{{address: {external}}}]\n"
    )
    assert clean.bounce("http://static.example.org:9090").json()["body"] == "502 Bad Gateway"
    clean.apply(entry)
    assert clean.bounce("http://static.example.org:9090").json()["body"] == "200 OK"
    clean.delete(entry)


def test_egress_gateway_path_counts_every_request(clean):
    for name in ("istio/egress-gateway.yaml.j2", "istio/egress-virtualservice.yaml.j2", "istio/service-entry.yaml.j2"):
        clean.apply_template(name)
    cluster = "cluster.outbound|9090||minimal.external.kind.org."
    start = clean.backend.proxy_stats("istio-egressgateway", cluster).get(cluster + "upstream_rq_total", 0)
    bodies = [clean.bounce("http://minimal.external.kind.org:9090").json()["body"] for _ in range(25)]
    end = clean.backend.proxy_stats("istio-egressgateway", cluster)[cluster + "upstream_rq_total"]
    assert bodies == ["200 OK"] * 25
    assert end - start == 25
    from meshy.render import render

    for name in ("istio/service-entry.yaml.j2", "istio/egress-virtualservice.yaml.j2", "istio/egress-gateway.yaml.j2"):
        clean.delete(render(name, clean.pair))


def test_invalid_apply_is_refused_and_the_mesh_keeps_serving(clean):
    before = clean.backend.state_file.read_text()
    bad = vs("    - route: [{destination: {host: minimal-service, subset: nowhere}}]")
    with pytest.raises(ResourceError, match="subset 'nowhere'"):
        clean.apply(bad)
    with pytest.raises(ResourceError, match="delegate"):
        clean.apply(vs("    - delegate: {name: other}\n      route: [{destination: {host: minimal-service}}]"))
    assert clean.backend.state_file.read_text() == before
    assert clean.get().status_code == 200


def test_config_change_keeps_in_flight_requests(clean):
    clean.apply(
        vs(
            "    - fault: {delay: {fixedDelay: 1s, percentage: {value: 100}}}\n      route: [{destination: {host: minimal-service}}]"
        )
    )
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("response", clean.get()))
    thread.start()
    time.sleep(0.3)
    clean.apply_template("istio/minimal-virtualservice.yaml.j2")
    thread.join(timeout=10)
    assert result["response"].status_code == 200


def test_apply_is_idempotent_and_reports_changes(clean):
    assert clean.apply_template("istio/minimal-virtualservice.yaml.j2") == [
        "VirtualService default/minimal-virtualservice unchanged"
    ]


@pytest.mark.parametrize("program", ["app", "proxy"])
def test_crashed_process_is_restarted(clean, program):
    import os
    import signal

    pod = next(p for p in clean.backend.pods() if p.deployment == "minimal-service")
    rpc = clean.backend.supervisor.rpc().supervisor
    before = rpc.getProcessInfo(f"{program}_{pod.name}")["pid"]
    os.kill(before, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if clean.get().status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.1)
    assert rpc.getProcessInfo(f"{program}_{pod.name}")["pid"] != before
    assert clean.get().status_code == 200


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


SLOW_SERVICE = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: slow-service, namespace: default}
spec:
  selector: {matchLabels: {app: slow-service}}
  template:
    metadata: {labels: {app: slow-service}}
    spec:
      containers:
        - name: app
          image: localhost:5000/minimal-service:v1.0.0
          ports: [{containerPort: 9090}]
          env: [{name: DELAY_MAX, value: "0.6"}, {name: DISCARD_QUOTA, value: "0"}]
---
apiVersion: v1
kind: Service
metadata: {name: slow-service, namespace: default}
spec:
  selector: {app: slow-service}
  ports: [{port: 9090}]
"""


def test_a_mesh_started_with_istio_18_keeps_its_rules(tmp_path):
    old = Mesh(tmp_path / "state", "1.19", "1.8")
    old.up()
    try:
        text = vs("    - route: [{destination: {host: minimal-service}}]")
        with pytest.raises(ResourceError, match="apiVersion 'networking.istio.io/v1' is not served by Istio 1.8"):
            old.apply(text)
        split = text.replace("    - route: [{destination: {host: minimal-service}}]", SPLIT_90).replace(
            "networking.istio.io/v1", "networking.istio.io/v1alpha3"
        )
        with pytest.raises(ResourceError, match="Istio 1.8 needs a total of 100"):
            old.apply(split)
        assert old.get().status_code == 200
        assert old.apply(text.replace("networking.istio.io/v1", "networking.istio.io/v1beta1"))
        assert old.get().status_code == 200
    finally:
        old.backend.down()


SPLIT_90 = (
    "    - route:\n"
    "        - {destination: {host: minimal-service}, weight: 60}\n"
    "        - {destination: {host: minimal-service}, weight: 30}"
)
