"""Access-log entries -> Istio's metrics -> Prometheus text -> the parser, and the dashboard's graph."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading

import pytest

from meshy import ROOT
from meshy.dashboard import page
from meshy.dashboard.graph import Graph
from meshy.local.backend import LocalBackend, LocalConfig, LocalError, State
from meshy.local.telemetry.accesslog import Entry, Tail, follow, parse_line, tails_at_end
from meshy.local.telemetry.metrics import (
    DOWNSTREAM,
    DURATION,
    LABELS,
    REQUEST_BYTES,
    REQUESTS,
    IstioMetrics,
    label_key,
)
from meshy.local.telemetry.peers import Service, Workload, workload_of
from meshy.local.topology import Layout
from meshy.metrics import istio
from meshy.metrics.prometheus import FormatError, Sample, by_label, exposition, parse, total
from meshy.net import claim_address_base, free_port
from meshy.versions import select_pair
from tests.test_incremental import LAYOUT, starting_resources

GATEWAY = workload_of("istio-ingressgateway", "istio-system", {"app": "istio-ingressgateway"})
V1 = workload_of("minimal-service", "default", {"app": "minimal-service", "version": "v1"})
V2 = workload_of("minimal-service-v2", "default", {"app": "minimal-service", "version": "v2"})
SERVICE = Service("minimal-service.default.svc.cluster.local", "minimal-service", "default")


def entry(listener: str = "gateway_80", code: int = 200, duration_ms: float = 2.0, size: int = 10) -> Entry:
    return Entry("p", listener, code, "-", "HTTP/1.1", size, size * 2, duration_ms, "c", "h", "r")


def labels(source: Workload, destination: Workload, reporter: str, code: int = 200) -> dict[str, str]:
    return {
        "reporter": reporter,
        **source.labels("source"),
        **destination.labels("destination"),
        **SERVICE.labels(),
        "request_protocol": "http",
        "response_code": str(code),
        "grpc_response_status": "",
        "response_flags": "-",
        "connection_security_policy": "unknown",
    }


def test_exposition_round_trips_through_the_parser():
    metrics = IstioMetrics()
    for code in (200, 200, 500):
        metrics.record(label_key(labels(GATEWAY, V1, "source", code)), entry(code=code, duration_ms=3.0, size=150))
    metrics.record(label_key(labels(GATEWAY, V2, "destination")), entry("inbound_9090", duration_ms=0.3))
    samples = parse(metrics.exposition())
    assert total(samples, REQUESTS) == 4
    assert by_label(samples, REQUESTS, "response_code", reporter="source") == {"200": 2.0, "500": 1.0}
    assert total(samples, REQUESTS, reporter="destination", destination_version="v2") == 1
    assert set(next(s for s in samples if s.name == REQUESTS).labels) == set(LABELS)
    # 3 ms falls in the (1, 5] bucket: cumulative 0 at le=1, 3 at le=5.
    source = labels(GATEWAY, V1, "source", 200)
    assert total(samples, f"{DURATION}_bucket", le="1", **source) == 0
    assert total(samples, f"{DURATION}_bucket", le="5", **source) == 2
    assert total(samples, f"{DURATION}_sum", **source) == 6.0
    # 0.3 ms lands in the first bucket.
    assert total(samples, f"{DURATION}_bucket", le="0.5", reporter="destination") == 1
    assert total(samples, f"{REQUEST_BYTES}_bucket", le="100", **source) == 0
    assert total(samples, f"{REQUEST_BYTES}_bucket", le="1000", **source) == 2


def test_parser_reads_escapes_and_refuses_garbage():
    text = '# HELP x y\nx{a="q\\"uote",b="back\\\\slash"} 2\nx_bucket{le="+Inf"} +Inf\nplain 3 1700000000\n'
    samples = parse(text)
    assert samples[0].labels == {"a": 'q"uote', "b": "back\\slash"}
    assert samples[1].value == math.inf and samples[2].value == 3
    # Written back (what the stand-ins serve for one proxy) and read again: the same samples.
    assert parse(exposition(samples)) == samples
    assert exposition([Sample("x", {}, 0.25), Sample("y", {}, math.nan)]) == "x 0.25\ny NaN\n"
    with pytest.raises(FormatError, match="line 1 is not a Prometheus sample"):
        parse("this is not { prometheus")
    with pytest.raises(FormatError, match="is not a number"):
        parse("x{} abc")


def test_access_log_lines_parse_and_partial_lines_wait(tmp_path):
    line = json.dumps(
        {
            "listener": "inbound_9090",
            "code": "503",
            "flags": "UH",
            "request_bytes": "5",
            "response_bytes": "-",
            "duration_us": "1500",
        }
    )
    parsed = parse_line("pod", line)
    assert parsed is not None
    assert (parsed.reporter, parsed.code, parsed.flags, parsed.request_bytes, parsed.response_bytes) == (
        "destination",
        503,
        "UH",
        5,
        0,
    )
    assert parsed.duration_ms == 1.5
    assert parse_line("pod", "{not json") is None
    path = tmp_path / "access.json"
    path.write_text(line + "\n" + line[:10])
    tail = Tail(path)
    assert tail.read() == [line]
    with open(path, "a") as handle:
        handle.write(line[10:] + "\n")
    assert tail.read() == [line]
    path.unlink()
    path.write_text("new\n")  # a replaced file is read from its start
    assert tail.read() == ["new"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_graph_shows_the_split_errors_quantiles_and_attempts():
    clock = Clock()
    graph = Graph(clock=clock, started=clock.now - 60)
    for i in range(100):
        version = V1 if i % 4 else V2  # 75% / 25%
        code = 500 if i % 10 == 0 else 200
        graph.observe(labels(GATEWAY, version, "source", code), entry(code=code, duration_ms=float(i + 1)))
        graph.observe(labels(GATEWAY, version, "destination", code), entry("inbound_9090", code=code))
    graph.observe(labels(GATEWAY, V1, "destination", 503), entry("inbound_9090", code=503))  # a retried attempt
    edges = {(e.source, e.target): e for e in graph.edges()}
    split = edges[("service:minimal-service.default.svc.cluster.local", "workload:minimal-service")]
    assert split.split == 0.75 and split.requests == 75
    into = edges[("workload:istio-ingressgateway", "service:minimal-service.default.svc.cluster.local")]
    assert into.requests == 100 and into.attempts == 101
    assert into.error_share == 0.10
    # Read from 5% duration buckets: within 2.5% of the exact 50 and 99.
    assert math.isclose(into.p50_ms, 50, rel_tol=0.025) and math.isclose(into.p99_ms, 99, rel_tol=0.025)
    assert math.isclose(into.rate, 100 / 60)
    assert "minimal-service v2" in page.table(graph) and "25%" in page.table(graph)
    clock.now += 61
    graph.tick()
    assert graph.edges() == []
    assert graph.series[-1][2] == {"200": 90, "500": 10}


def test_clients_outside_the_mesh_enter_at_the_gateway_as_unknown():
    clock = Clock()
    graph = Graph(clock=clock, started=clock.now - 60)
    for i in range(40):
        outside = i % 4 != 0  # a quarter come from a mesh workload (a sidecar calling the ingress)
        downstream = {DOWNSTREAM: "unknown" if outside else "minimal-service"}
        graph.observe({**labels(GATEWAY, V1, "source"), **downstream}, entry())
    graph.observe({**labels(V1, V2, "source"), DOWNSTREAM: "unknown"}, entry())  # a sidecar's own client
    edges = {(e.source, e.target): e for e in graph.edges()}
    into = edges[("unknown", "workload:istio-ingressgateway")]
    assert into.requests == 30 and into.split == 1.0 and into.error_share == 0
    assert graph.nodes["unknown"].kind == "unknown"
    # Only gateways are entered from outside: a sidecar's inbound clients stay as the metrics say.
    assert not [key for key in edges if key[0] == "unknown" and key[1] != "workload:istio-ingressgateway"]
    assert "unknown" in page.table(graph)


def test_scenario_queries_read_each_proxys_own_reports_from_the_mesh_wide_exposition():
    bounced = Service("bounced-service.default.svc.cluster.local", "bounced-service", "default")
    bounced_workload = workload_of("bounced-service", "default", {"app": "bounced-service", "version": "v1"})
    metrics = IstioMetrics()

    def record(reporter: str, code: int, times: int) -> None:
        for _ in range(times):
            metrics.record(label_key({**labels(V1, bounced_workload, reporter, code), **bounced.labels()}), entry())

    record("source", 200, 10)  # minimal-service's sidecar: one count per call
    record("destination", 200, 10)  # bounced-service's sidecar: one per attempt
    record("destination", 500, 23)
    samples = parse(metrics.exposition())
    caller, callee = istio.reported_by(samples, "minimal-service"), istio.reported_by(samples, "bounced-service")
    # Histogram series carry the same labels: each proxy's share is its reporter's, nothing else.
    assert {s.labels["reporter"] for s in caller} == {"source"} and {s.labels["reporter"] for s in callee} == {
        "destination"
    }
    assert istio.requests(caller, "bounced-service") == 10 == istio.requests(callee, bounced.host, response_code="200")
    assert istio.requests_by(callee, bounced.host, ("response_code",)) == {("200",): 10, ("500",): 23}
    assert istio.requests(samples, "other-service") == 0
    before = istio.requests_by(callee, bounced.host, ("response_code",))
    record("destination", 500, 4)
    after = istio.requests_by(
        istio.reported_by(parse(metrics.exposition()), "bounced-service"), bounced.host, ("response_code",)
    )
    assert istio.increase(before, after) == {("500",): 4}


def test_dashboard_address_must_be_loopback():
    with pytest.raises(
        LocalError, match=r"dashboard address '0\.0\.0\.0:20001' is not a loopback HOST:PORT; set --dashboard"
    ):
        LocalConfig.from_env("/tmp/unused", dashboard="0.0.0.0:20001")
    assert (
        LocalConfig.from_env("/tmp/unused", dashboard="127.0.0.1:20099").layout.dashboard_url
        == "http://127.0.0.1:20099"
    )


def test_a_taken_dashboard_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        base, _claim = claim_address_base()
        layout = Layout("127.0.0.1", free_port(), base, dashboard_port=port)
        backend = LocalBackend(LocalConfig(tmp_path / "state", layout))
        with pytest.raises(LocalError, match=f"127.0.0.1:{port} \\(the dashboard\\) is already in use"):
            backend.up(select_pair())
    assert not backend.supervisor.running()


def test_follow_passes_on_only_new_lines_of_every_file(tmp_path):
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    first.write_text("old\n")
    seen: list[str] = []
    stop = threading.Event()

    def write(line: str) -> None:
        seen.append(line)
        if len(seen) == 2:
            stop.set()

    worker = threading.Thread(target=follow, args=(tails_at_end([first, second]), write, stop, 0.01))
    worker.start()
    with open(first, "a") as handle:
        handle.write("new in a\n")
    second.write_text("new in b\n")  # a file that appears later is followed from its start
    worker.join(timeout=10)
    assert not worker.is_alive() and sorted(seen) == ["new in a", "new in b"]


def test_a_tail_reads_a_rotated_file_to_its_end_before_the_new_one(tmp_path):
    from meshy.local.telemetry.accesslog import rotated

    path = tmp_path / "access.json"
    path.write_text("1\n2\n")
    tail = Tail(path)
    assert tail.read() == ["1", "2"]
    with open(path, "a") as writer:  # the writer keeps its handle across the move, as Envoy does
        writer.write("3\n")
        path.rename(rotated(path))
        writer.write("4\n")
        writer.flush()
        assert tail.read() == ["3", "4"]  # moved aside, no new file yet: the old one is read on
        writer.write("5")
    path.write_text("6\n")  # the writer closed the old file and opened the path anew
    with open(rotated(path), "a") as late:
        late.write("\n")
    assert tail.read() == ["5"]
    assert tail.read() == ["6"]
    assert tail.read() == []


def test_last_lines_reach_into_the_previous_generation(tmp_path):
    from meshy.local.telemetry.accesslog import last_lines, rotated

    path = tmp_path / "access.log"
    assert last_lines(path, 3) == []
    rotated(path).write_text("a\nb\nc\n")
    path.write_text("d\n")
    assert last_lines(path, 3) == ["b", "c", "d"]
    assert last_lines(path, 1) == ["d"]
    assert last_lines(path, 0) == []


def test_the_dashboard_process_loads_no_translation_layer_grpc_or_ca(tmp_path):
    # Its memory target (< 50 MB after a minute at 1,000 req/s, nox -s bench) depends on this: the
    # collector reads the mesh's workloads from state.json through meshy.local.state, not the backend.
    state_dir = tmp_path / "state"
    LocalBackend(LocalConfig(state_dir)).save(State(resources=starting_resources(), layout=LAYOUT))
    probe = (
        "import json, sys; from pathlib import Path; import meshy.dashboard.__main__; "
        "from meshy.local.telemetry.collector import peers_of; peers = peers_of(Path(sys.argv[1])); "
        "print(json.dumps([sorted(peers.by_ip), [m for m in sys.argv[2:] if m in sys.modules]]))"
    )
    heavy = ["meshy.local.backend", "meshy.local.envoy", "meshy.local.xds.client", "grpc", "cryptography"]
    result = subprocess.run(
        [sys.executable, "-c", probe, str(state_dir), *heavy], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    addresses, loaded = json.loads(result.stdout)
    assert len(addresses) >= 5 and loaded == []  # the workloads were read, with none of the heavy modules
