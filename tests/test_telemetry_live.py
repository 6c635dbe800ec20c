"""Istio's standard metrics on a real local mesh: Envoy access logs -> the mesh's /metrics.

Checked against Istio's definitions: the label set, one count per request per
reporter (the caller's proxy as source, the callee's as destination), every
retry attempt counted by the destination only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from meshy import ROOT
from meshy.local.backend import LocalError
from meshy.local.telemetry.metrics import DURATION, DURATION_BUCKETS, LABELS, REQUESTS
from meshy.metrics.prometheus import parse, total
from meshy.net import wait_until
from tests.local_mesh import Mesh, running

RETRIES = "istio/bounced-virtualservice-retries.yaml.j2"
# Istio's default text access-log format: "[time] "METHOD PATH PROTOCOL" CODE FLAGS DETAILS ..."
ISTIO_TEXT_LINE = re.compile(r'^\[\S+\] "(GET|POST) \S+ HTTP/1\.1" \d{3} \S+ \S+ \S+ "[^"]*" \d+ \d+ \d+ ')


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with running(tmp_path_factory.mktemp("telemetry") / "state") as mesh_up:
        yield mesh_up


def counts(mesh: Mesh, **labels: str) -> float:
    return total(parse(mesh.metrics()), REQUESTS, **labels)


def test_one_count_per_request_per_reporter_with_istios_labels(mesh):
    edge = {"source_workload": "istio-ingressgateway", "destination_workload": "minimal-service"}
    before_source = counts(mesh, reporter="source", **edge)
    before_destination = counts(mesh, reporter="destination", **edge)
    for _ in range(25):
        assert mesh.get().status_code == 200
    samples = parse(mesh.metrics())
    assert total(samples, REQUESTS, reporter="source", response_code="200", **edge) - before_source == 25
    assert total(samples, REQUESTS, reporter="destination", response_code="200", **edge) - before_destination == 25
    sample = next(s for s in samples if s.name == REQUESTS and s.labels["reporter"] == "destination")
    assert set(sample.labels) == set(LABELS)
    assert sample.labels["destination_service"] == "minimal-service.default.svc.cluster.local"
    assert sample.labels["destination_version"] == "v1"
    assert sample.labels["source_workload_namespace"] == "istio-system"
    assert sample.labels["response_flags"] == "-"
    buckets = [s for s in samples if s.name == f"{DURATION}_bucket" and s.labels == {**sample.labels, "le": "+Inf"}]
    assert len(DURATION_BUCKETS) + 1 == 20  # Istio's bucket count, +Inf included
    assert buckets and buckets[0].value == total(samples, f"{DURATION}_count", **sample.labels)


def test_retry_attempts_show_on_the_destination_side_only(mesh):
    call = {"source_workload": "minimal-service", "destination_workload": "bounced-service"}
    calls = 40

    def bounce_all() -> tuple[int, float, float, float]:
        src0, dst0 = counts(mesh, reporter="source", **call), counts(mesh, reporter="destination", **call)
        ok0 = counts(mesh, reporter="destination", response_code="200", **call)
        ok = sum(1 for _ in range(calls) if mesh.bounce("http://bounced-service:9090/").json()["body"] == "200 OK")
        samples = parse(mesh.metrics())
        return (
            ok,
            total(samples, REQUESTS, reporter="source", **call) - src0,
            total(samples, REQUESTS, reporter="destination", **call) - dst0,
            total(samples, REQUESTS, reporter="destination", response_code="200", **call) - ok0,
        )

    # Istio's default retry policy does not retry a 500: one attempt per call on both sides.
    ok, source, destination, destination_ok = bounce_all()
    assert source == destination == calls
    assert destination_ok == ok
    mesh.apply_template(RETRIES)
    try:
        ok, source, destination, destination_ok = bounce_all()
    finally:
        mesh.delete_template(RETRIES)
    assert source == calls
    # Every successful call ends in exactly one 200 attempt; failed attempts are extra destination counts.
    assert destination_ok == ok
    assert destination > source + 10  # 0.7 failure share: about 3.3 attempts per call


def test_access_logs_in_istios_format_by_workload_name(mesh):
    mesh.get("/access-log-probe")
    files = mesh.backend.access_logs("minimal-service")

    def probe_lines() -> list[str]:
        return [line for path in files for line in path.read_text().splitlines() if "/access-log-probe" in line]

    # Envoy flushes access logs every 100 ms.
    assert wait_until(lambda: bool(probe_lines()), timeout=5)
    lines = probe_lines()
    assert lines and all(ISTIO_TEXT_LINE.match(line) for line in lines), lines
    gateway_log = mesh.backend.access_logs("istio-ingressgateway")[0]
    # The gateway logs once the response is sent, after the sidecar did.
    assert wait_until(lambda: "/access-log-probe" in gateway_log.read_text(), timeout=5)
    probe = next(line for line in gateway_log.read_text().splitlines() if "/access-log-probe" in line)
    assert ISTIO_TEXT_LINE.match(probe) and "outbound|9090||minimal-service" in probe


def test_unknown_workload_names_the_known_ones(mesh):
    with pytest.raises(LocalError, match="no workload named 'nope'; known workloads: bounced-service"):
        mesh.backend.access_logs("nope")


def test_logs_task_follows_a_workloads_access_log(mesh):
    env = {
        **{k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
        "MESHY_STATE": str(mesh.backend.dir),
    }
    command = [sys.executable, "-m", "invoke", "local.logs", "minimal-service", "--access", "--follow", "--tail", "0"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        header = process.stdout.readline()
        assert header.startswith("==> ") and header.rstrip().endswith("access.log <==")
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
        reader.start()
        assert wait_until(lambda: mesh.get("/followed").status_code == 200 and any("/followed" in x for x in lines), 10)
        assert ISTIO_TEXT_LINE.match(next(x for x in lines if "/followed" in x))
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def test_dashboard_task_prints_the_url_of_the_running_mesh(mesh):
    env = {**os.environ, "MESHY_STATE": str(mesh.backend.dir)}
    out = subprocess.run(
        [sys.executable, "-m", "invoke", "local.dashboard"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [f"{mesh.backend.layout.dashboard_url}/", f"{mesh.backend.layout.dashboard_url}/metrics"]


def test_access_logs_are_capped_and_rotated_without_losing_a_request(mesh):
    """A collector with a small cap rotates the logs under traffic (real Envoy reopens them on POST
    /reopen_logs) and counts every request, reading each moved-aside file to its end; no log grows far
    past the cap. The mesh's own collector (the dashboard, whose cap is far off) reads the new files on."""
    from meshy.local.telemetry.accesslog import JSON_FILE, TEXT_FILE
    from meshy.local.telemetry.collector import Collector

    cap = 16 * 1024  # about 40 JSON lines (400 bytes each), 50 text lines
    edge = {
        "reporter": "destination",
        "source_workload": "istio-ingressgateway",
        "destination_workload": "minimal-service",
    }
    collector = Collector(mesh.backend.dir, max_bytes=cap)
    collector.poll()  # what the logs hold now counts as before
    mine_before = total(parse(collector.exposition()), REQUESTS, **edge)
    sent = 400
    for index in range(sent):
        assert mesh.get(f"/rotation-{index}").status_code == 200
        if index % 10 == 0:
            collector.poll()
    directory = mesh.backend.proxy_dir(next(p.name for p in mesh.backend.pods() if p.deployment == "minimal-service"))

    def settled() -> bool:
        collector.poll()
        return total(parse(collector.exposition()), REQUESTS, **edge) - mine_before >= sent

    assert wait_until(settled, timeout=10)
    assert total(parse(collector.exposition()), REQUESTS, **edge) - mine_before == sent
    assert collector.rotations >= 3
    # Only one collector should rotate (the dashboard's): one that lags a generation behind another's
    # rotations loses what it did not read. After them, the dashboard's reads the new files to the request.
    mesh_before = counts(mesh, **edge)
    for _ in range(10):
        assert mesh.get("/after-rotation").status_code == 200
    assert counts(mesh, **edge) - mesh_before == 10
    # Past the cap, a log grows until the next poll moves it aside (10 requests) and then until Envoy
    # reopens it: its flush thread first writes what it buffered (up to 100 ms of requests, about 30 lines
    # at this pace) to the moved file. Measured: 87 lines in access.json.1 when polling every 20 requests.
    # Without rotation each log would hold all 400 requests: 8 x cap of text, 10 x of JSON.
    bound = 3 * cap
    for name in (JSON_FILE, TEXT_FILE):
        assert (directory / name).stat().st_size < bound and (directory / f"{name}.1").stat().st_size < bound
    assert sorted(p.name for p in directory.glob("access.*")) == sorted(
        [JSON_FILE, TEXT_FILE, f"{JSON_FILE}.1", f"{TEXT_FILE}.1"]
    )
