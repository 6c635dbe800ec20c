"""Black-box tests of minimal-service as a real process on a free port."""

from __future__ import annotations

import http.server
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from meshy import ROOT, stats
from meshy.net import free_port, wait_until
from minimal_service.config import ConfigError, Settings

NO_PROXY = {"http": "", "https": ""}


def get(url, **kwargs):
    return requests.get(url, proxies=NO_PROXY, timeout=10, **kwargs)


def post(url, **kwargs):
    return requests.post(url, proxies=NO_PROXY, timeout=10, **kwargs)


def bounce_body(endpoint: str) -> str:
    return f'{{"rebound":"true","endpoint":"{endpoint}"}}'


def test_health(start_service):
    service = start_service()
    response = get(service.url + "/health")
    assert response.status_code == 200
    assert response.text == "Status OK"


def test_get_echoes_request_as_json(start_service):
    service = start_service(HOSTNAME="minimal-service-abc12")
    response = get(service.url + "/some/path?x=1", headers={"X-Custom": "yes"}, data="payload")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["servedBy"] == "minimal-service-abc12"
    assert doc["host"] == f"127.0.0.1:{service.port}"
    assert doc["statuscode"] == 200
    assert doc["method"] == "GET"
    assert doc["protocol"] == "HTTP/1.1"
    assert doc["requestURI"] == "/some/path?x=1"
    assert doc["body"] == "payload"
    assert doc["headers"]["X-Custom"] == "yes"
    assert {"Request-time", "Response-time", "Duration"} <= set(doc["headers"])
    assert float(doc["headers"]["Duration"]) >= 0


def test_get_without_body_omits_body(start_service):
    assert "body" not in get(start_service().url).json()


def test_get_text_plain(start_service):
    service = start_service(HOSTNAME="plain-host")
    response = get(service.url + "/p", headers={"Content-Type": "text/plain"})
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert lines[0] == "Request served by plain-host"
    assert "GET /p HTTP/1.1" in lines
    assert f"Host: 127.0.0.1:{service.port}" in lines


def test_other_methods_are_405(start_service):
    service = start_service()
    assert requests.put(service.url + "/", proxies=NO_PROXY, timeout=5).status_code == 405
    assert post(service.url + "/not-bounce", data="{}").status_code == 405


def test_discard_quota_with_reject_is_statistically_right(start_service):
    service = start_service(DISCARD_QUOTA="70", REJECT="1", LOG_REQUESTS="0")
    n = 2000
    session = requests.Session()
    session.trust_env = False
    codes = [session.get(service.url + "/").status_code for _ in range(n)]
    rejected = codes.count(500)
    assert rejected + codes.count(200) == n
    # 99.9% Wilson interval: a working quota passes 999 times in 1,000; a quota
    # ignored (0%) or doubled (100%) or halved (35%) falls far outside.
    assert 0.70 in stats.wilson(rejected, n, 0.001)


def test_discard_without_reject_drops_with_empty_answer(start_service):
    service = start_service(DISCARD_QUOTA="100", REJECT="0")
    response = get(service.url + "/")
    assert response.status_code == 200
    assert response.content == b""
    # /health is never discarded.
    assert get(service.url + "/health").text == "Status OK"


def test_delay_max_delays_requests(start_service):
    service = start_service(DELAY_MAX="0.2")
    durations = []
    for _ in range(20):
        started = time.perf_counter()
        get(service.url + "/")
        durations.append(time.perf_counter() - started)
    # Uniform on [0, 0.2]: the mean is 0.1; 20 draws keep it far above 0.02.
    assert 0.03 < sum(durations) / len(durations) < 0.2
    assert max(durations) < 0.5


def test_bounce_reports_upstream_status(start_service):
    upstream_ok = start_service()
    upstream_bad = start_service(DISCARD_QUOTA="100", REJECT="1")
    front = start_service()
    ok = post(front.url + "/bounce", data=bounce_body(upstream_ok.url + "/"))
    assert ok.status_code == 200
    assert ok.json()["body"] == "200 OK"
    assert ok.json()["headers"]["Content-Type"] == "application/json"
    bad = post(front.url + "/bounce", data=bounce_body(upstream_bad.url + "/"))
    assert bad.status_code == 200
    assert bad.json()["body"] == "500 Internal Server Error"


def test_bounce_propagates_trace_headers(start_service):
    front = start_service()
    headers = {
        "x-request-id": "rid-1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
        "x-b3-sampled": "1",
    }
    capture = CaptureServer()
    with capture:
        post(front.url + "/bounce", data=bounce_body(capture.url), headers=headers)
    received = capture.headers
    for name, value in headers.items():
        assert received[name] == value


def test_bounce_honours_http_proxy(start_service):
    upstream = start_service()
    proxy = CaptureServer()
    with proxy:
        front = start_service(HTTP_PROXY=proxy.url, NO_PROXY="")
        response = post(front.url + "/bounce", data=bounce_body("http://bounced-service:9090/"))
    assert response.json()["body"] == "200 OK"
    # The proxy saw the absolute-form request for the named host.
    assert proxy.path == "http://bounced-service:9090/"
    assert upstream.process.poll() is None


def test_bounce_unreachable_is_502(start_service):
    front = start_service()
    closed = free_port()
    response = post(front.url + "/bounce", data=bounce_body(f"http://127.0.0.1:{closed}/"))
    assert response.status_code == 502
    unresolvable = post(front.url + "/bounce", data=bounce_body("http://no-such-host.invalid:9090/"))
    assert unresolvable.status_code == 502


def test_bounce_answer_broken_off_after_headers_is_502(start_service):
    # What a caller's sidecar does when a route timeout fires after the upstream's headers: it resets the stream.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BrokenOff)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        front = start_service()
        response = post(front.url + "/bounce", data=bounce_body(f"http://127.0.0.1:{server.server_address[1]}/"))
    finally:
        server.shutdown()
    assert response.status_code == 502
    assert response.text.strip() == "Bad Gateway: the endpoint's answer broke off"


class BrokenOff(http.server.BaseHTTPRequestHandler):
    """Promises 100 bytes, sends 10, closes."""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"rebound":"true"}',
        '{"rebound":"true","endpoint":"http://x","extra":1}',
        '{"rebound":true,"endpoint":"http://x"}',
        '{"rebound":"true","endpoint":42}',
        '{"rebound":"true","endpoint":"ftp://x/"}',
        '{"rebound":"false","endpoint":"http://x/"}',
    ],
)
def test_bounce_bad_bodies_are_400_with_reason(start_service_module, body):
    response = post(start_service_module.url + "/bounce", data=body)
    assert response.status_code == 400
    assert response.text.startswith("Bad Request: ")
    assert len(response.text.strip().splitlines()) == 1


def test_bounce_unknown_content_type_is_415(start_service):
    response = post(start_service().url + "/bounce", data="<x/>", headers={"Content-Type": "application/xml"})
    assert response.status_code == 415


def test_oversized_body_is_413_and_service_survives(start_service):
    service = start_service()
    assert post(service.url + "/bounce", data=b"x" * (2 << 20)).status_code == 413
    assert get(service.url + "/health").status_code == 200


def test_metrics_count_requests_by_path_method_code(start_service):
    service = start_service()
    for _ in range(3):
        get(service.url + "/a")
    requests.delete(service.url + "/a", proxies=NO_PROXY, timeout=5)
    text = get(service.url + "/metrics").text
    assert 'minimal_service_requests_total{path="/a",method="GET",code="200"} 3' in text
    assert 'minimal_service_requests_total{path="/a",method="DELETE",code="405"} 1' in text
    # Four calls here plus the fixture's readiness check on /health.
    assert 'minimal_service_request_duration_seconds_bucket{le="+Inf"} 5' in text


def test_sigterm_finishes_in_flight_request_and_exits_0(start_service):
    service = start_service(DELAY_MAX="1.5")
    result = {}

    def slow_call():
        started = time.perf_counter()
        # DELAY_MAX draws uniformly; retry until a draw is long enough to be in flight.
        result["response"] = get(service.url + "/")
        result["elapsed"] = time.perf_counter() - started

    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(0.05)
    service.process.send_signal(signal.SIGTERM)
    exit_code = service.process.wait(timeout=5)
    thread.join(timeout=5)
    assert exit_code == 0
    assert result["response"].status_code == 200
    # New connections are refused after the stop.
    with pytest.raises(requests.ConnectionError):
        get(service.url + "/health")


def test_tracing_exports_spans_to_collector(start_service):
    collector = CaptureServer()
    with collector:
        front = start_service(TRACING="1", JAEGER_URL=collector.url + "v1/traces")
        upstream = start_service()
        post(
            front.url + "/bounce",
            data=bounce_body(upstream.url + "/"),
            headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        )
        front.process.send_signal(signal.SIGTERM)
        front.process.wait(timeout=5)
    assert collector.path == "/v1/traces"
    assert collector.headers["content-type"] == "application/x-protobuf"
    # The span carries the incoming trace id (protobuf bytes).
    assert bytes.fromhex("0af7651916cd43dd8448eb211c80319c") in collector.body


def test_tracing_off_loads_no_opentelemetry():
    code = (
        "import sys; from minimal_service.app import MinimalService; from minimal_service.config import Settings;"
        "MinimalService(Settings()); print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SERVICE_PORT": "http"}, "SERVICE_PORT='http' is not a number"),
        ({"DISCARD_QUOTA": "170"}, "DISCARD_QUOTA='170' is out of range"),
        ({"REJECT": "maybe"}, "REJECT='maybe' is not a flag"),
        ({"SERVICE_PORT": "90.5"}, "is not a whole number"),
    ],
)
def test_bad_settings_are_refused(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_bad_settings_exit_2_with_one_line():
    env = {"PATH": "/usr/bin", "DISCARD_QUOTA": "abc"}
    out = subprocess.run([sys.executable, "-m", "minimal_service"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "DISCARD_QUOTA" in out.stderr


def test_port_taken_exits_non_zero(start_service):
    service = start_service()
    env = {"PATH": "/usr/bin", "SERVICE_PORT": str(service.port)}
    out = subprocess.run(
        [sys.executable, "-m", "minimal_service"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20
    )
    assert out.returncode != 0
    assert "choose a free port" in out.stderr


@pytest.fixture
def start_service_module(start_service):
    return start_service()


class CaptureServer:
    """A real HTTP server on loopback that records the last request."""

    def __init__(self) -> None:
        self.path = ""
        self.headers: dict[str, str] = {}
        self.body = b""
        capture = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self):
                capture.path = self.path
                capture.headers = {k.lower(): v for k, v in self.headers.items()}
                length = int(self.headers.get("Content-Length") or 0)
                capture.body = self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _record

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_reuse_port_lets_a_successor_bind_beside_a_running_instance(start_service):
    import os
    import subprocess
    import sys

    from meshy import ROOT

    first = start_service(SERVICE_REUSE_PORT="1")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(SERVICE_PORT=str(first.port), SERVICE_REUSE_PORT="1", HOSTNAME="successor")
    successor = subprocess.Popen([sys.executable, "-m", "minimal_service"], cwd=ROOT, env=env, stdout=subprocess.PIPE)
    try:
        assert successor.stdout.readline().startswith(b"Logger")  # it started serving, no "cannot listen"
        assert successor.poll() is None
    finally:
        successor.kill()
        successor.wait()
    # Without the setting the port stays exclusive, as before.
    env.pop("SERVICE_REUSE_PORT")
    refused = subprocess.run(
        [sys.executable, "-m", "minimal_service"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 1
    assert "cannot listen on" in refused.stderr


def test_tls_port_serves_the_same_app_over_tls_and_logs_it(start_service, tmp_path):
    from meshy.scenarios.certificates import external_credentials

    files = external_credentials(tmp_path / "tls", "localhost")
    tls_port = free_port()
    service = start_service(
        TLS_PORT=str(tls_port), TLS_CERT_FILE=str(files / "tls.crt"), TLS_KEY_FILE=str(files / "tls.key")
    )
    secure = requests.get(f"https://localhost:{tls_port}/tls-path", verify=str(files / "ca.crt"), timeout=10)
    assert secure.status_code == 200
    assert secure.json()["requestURI"] == "/tls-path"
    assert get(service.url + "/plain-path").status_code == 200
    # Plain HTTP to the TLS port is no request at all.
    with pytest.raises(requests.ConnectionError):
        get(f"http://127.0.0.1:{tls_port}/plain-to-tls")
    assert wait_until(lambda: "/plain-path" in service.output(), timeout=5)
    lines = service.output().splitlines()
    assert any("[GET /tls-path 127.0.0.1:" in line and " tls] 200" in line for line in lines)
    assert any("[GET /plain-path " in line and " tls]" not in line for line in lines)
    assert not any("/plain-to-tls" in line for line in lines)
    # One SIGTERM stops both listeners.
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=6) == 0


def test_tls_port_without_files_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="TLS_CERT_FILE='' names no file"):
        Settings.from_env({"TLS_PORT": "9443"})
    with pytest.raises(ConfigError, match="TLS_KEY_FILE="):
        Settings.from_env({"TLS_PORT": "9443", "TLS_CERT_FILE": __file__, "TLS_KEY_FILE": str(tmp_path / "none")})


def test_external_credentials_are_owner_only_and_kept(tmp_path):
    from meshy.scenarios.certificates import EXTERNAL_FILES, external_credentials

    directory = external_credentials(tmp_path / "tls", "minimal.external.kind.org")
    assert directory.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()} == dict.fromkeys(EXTERNAL_FILES, 0o600)
    before = (directory / "tls.key").read_text()
    external_credentials(directory, "minimal.external.kind.org")
    assert (directory / "tls.key").read_text() == before  # a restart keeps what clients already trust
    (directory / "tls.crt").write_text("not a certificate")
    external_credentials(directory, "minimal.external.kind.org")
    assert (directory / "tls.key").read_text() != before  # a broken or expiring certificate is made anew
