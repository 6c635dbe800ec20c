"""The README's speed and memory figures, measured on this machine (run: nox -s bench).

minimal-service: requests/s on one core, p99 at 1,000 requests/s, resident memory.
Local backend: cold start to the first 200, apply-to-observed, latency per path
side by side with a bare hand-written Envoy, the dashboard's cost, each scenario's
duration, demo cold. `scripts/bench.py dashboard mesh` runs only the steps named.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from meshy.bench import Load, hey, repeating  # noqa: E402
from meshy.console import Console  # noqa: E402
from meshy.dashboard.page import REFRESH_SECONDS  # noqa: E402
from meshy.local.backend import DASHBOARD_PROGRAM, LocalBackend, LocalConfig, envoy_binary  # noqa: E402
from meshy.local.topology import Layout  # noqa: E402
from meshy.net import claim_address_base, free_port, http_ok, wait_until  # noqa: E402
from meshy.versions import select_pair  # noqa: E402

NO_PROXY = {"http": "", "https": ""}
OUT = ROOT / "reports" / "bench"


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    memory = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal"))) // 1024 // 1024
    return f"{os.cpu_count()} cores ({cpu}), {memory} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def bench_service(results: dict) -> None:
    port = free_port()
    env = {**os.environ, "SERVICE_PORT": str(port), "HOSTNAME": "bench", "LOG_REQUESTS": "0"}
    # One worker on core 0, the load generator on core 1.
    process = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "minimal_service"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: http_ok(url + "health"), timeout=10)
        hey(url, seconds=2, workers=16, cpu="1")  # warm-up
        peak = hey(url, seconds=10, workers=32, cpu="1")
        paced = hey(url, seconds=10, workers=10, rate_per_worker=100, cpu="1")
        rss, hwm = rss_mb(process.pid)
        env_logged = {**env, "LOG_REQUESTS": "1"}
    finally:
        process.terminate()
        process.wait()
    # The same with one log line per request (the default), output discarded.
    port2 = free_port()
    env_logged["SERVICE_PORT"] = str(port2)
    logged = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "minimal_service"],
        cwd=ROOT,
        env=env_logged,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port2}/health"), timeout=10)
        with_log = hey(f"http://127.0.0.1:{port2}/", seconds=10, workers=32, cpu="1")
    finally:
        logged.terminate()
        logged.wait()
    results["minimal_service"] = {
        "rps_one_core": round(peak.rps),
        "rps_one_core_with_request_log": round(with_log.rps),
        "p50_ms_at_1000": paced.p50_ms,
        "p99_ms_at_1000": paced.p99_ms,
        "rps_paced": round(paced.rps),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(hwm, 1),
        "errors": peak.errors + paced.errors,
    }


def local_backend(state: Path) -> LocalBackend:
    return LocalBackend(
        LocalConfig(state, Layout("127.0.0.1", free_port(), 90, dashboard_port=free_port())), Console(quiet=True)
    )


def bench_cold_start(results: dict) -> None:
    times = []
    for _ in range(3):
        backend = local_backend(Path(tempfile.mkdtemp()) / "state")
        try:
            times.append(backend.up(select_pair()))
        finally:
            backend.down()
    results["cold_start_s"] = {"median": round(statistics.median(times), 3), "runs": [round(t, 3) for t in times]}


def bare_envoy(app: str, port: int, listen: tuple[str, int], workdir: Path) -> subprocess.Popen:
    """A hand-written static Envoy: one listener, one route, one cluster (the yardstick)."""
    config = {
        "admin": {"address": {"socket_address": {"address": listen[0], "port_value": free_port(listen[0])}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "bare",
                    "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "bare",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "app",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "app",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {"endpoint": {"address": {"socket_address": {"address": app, "port_value": port}}}}
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }
    path = workdir / "bare-envoy.json"
    path.write_text(json.dumps(config))
    return subprocess.Popen(
        [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "-l", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def paced(url: str, **kwargs) -> Load:
    return hey(url, seconds=8, workers=10, rate_per_worker=100, **kwargs)


def bench_mesh(results: dict) -> None:
    workdir = Path(tempfile.mkdtemp())
    backend = local_backend(workdir / "state")
    backend.up(select_pair())
    bare = None
    try:
        pod = next(p for p in backend.pods() if p.deployment == "minimal-service")
        client = next(p for p in backend.pods() if p.deployment == "bounced-service")
        bare_port = free_port()
        bare = bare_envoy(pod.app_ip, 9090, ("127.0.0.1", bare_port), workdir)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{bare_port}/health"), timeout=10)
        paths = {
            "direct (app)": dict(url=f"http://{pod.app_ip}:9090/"),
            "bare Envoy hop (hand-written)": dict(url=f"http://127.0.0.1:{bare_port}/"),
            "one sidecar (inbound)": dict(url=f"http://{pod.ip}:9090/"),
            "sidecar -> sidecar -> app": dict(url="http://minimal-service:9090/", proxy=f"http://{client.ip}:15001"),
            "ingress -> sidecar -> app": dict(url=backend.ingress_url + "/", host="minimal.svc.kind.org"),
        }
        for target in paths.values():
            hey(**target, seconds=1, workers=4)  # warm-up
        rounds: dict[str, list[Load]] = {name: [] for name in paths}
        for _ in range(2):  # interleaved, so drift hits every path alike
            for name, target in paths.items():
                rounds[name].append(paced(**target))
        latency = {
            name: {
                q: round(statistics.median(getattr(load, f"{q}_ms") for load in loads), 3)
                for q in ("p50", "p90", "p99")
            }
            for name, loads in rounds.items()
        }
        direct = latency["direct (app)"]["p50"]
        bare_hop = latency["bare Envoy hop (hand-written)"]["p50"] - direct
        sidecar_hop = latency["one sidecar (inbound)"]["p50"] - direct
        results["latency_at_1000_rps_ms"] = latency
        results["per_hop_p50_ms"] = {
            "bare": round(bare_hop, 3),
            "generated sidecar": round(sidecar_hop, 3),
            "generated, sidecar -> sidecar (per hop)": round(
                (latency["sidecar -> sidecar -> app"]["p50"] - direct) / 2, 3
            ),
            "generated, ingress -> sidecar (per hop)": round(
                (latency["ingress -> sidecar -> app"]["p50"] - direct) / 2, 3
            ),
            "ratio generated / bare": round(sidecar_hop / bare_hop, 2) if bare_hop > 0 else None,
        }
        results["apply_to_observed_ms"] = bench_apply(backend)
    finally:
        if bare:
            bare.terminate()
            bare.wait()
        backend.down()


def bench_dashboard(results: dict) -> None:
    """Latency through the ingress at 1,000 req/s with the dashboard stopped and running (a viewer polling
    it as the page does), in interleaved rounds of one run; then its memory after a full minute of load."""
    backend = local_backend(Path(tempfile.mkdtemp()) / "state")
    backend.up(select_pair())
    rpc = backend.supervisor.rpc().supervisor
    target = dict(url=backend.ingress_url + "/", host="minimal.svc.kind.org")
    try:
        hey(**target, seconds=1, workers=4)  # warm-up
        rounds: dict[str, list[Load]] = {"dashboard stopped": [], "dashboard running, page open": []}
        for _ in range(2):
            rpc.stopProcess(DASHBOARD_PROGRAM)
            rounds["dashboard stopped"].append(paced(**target))
            rpc.startProcess(DASHBOARD_PROGRAM)
            wait_until(lambda: http_ok(backend.layout.dashboard_url + "/metrics"), timeout=10)
            with viewer(backend.layout.dashboard_url):
                rounds["dashboard running, page open"].append(paced(**target))
        latency = {
            name: {q: round(statistics.median(getattr(load, f"{q}_ms") for load in loads), 3) for q in ("p50", "p99")}
            for name, loads in rounds.items()
        }
        off, on = latency["dashboard stopped"], latency["dashboard running, page open"]
        results["dashboard_latency_at_1000_rps_ms"] = latency
        results["dashboard_latency_ratio"] = {q: round(on[q] / off[q], 3) for q in ("p50", "p99")}
        with viewer(backend.layout.dashboard_url):
            hey(**target, seconds=60, workers=10, rate_per_worker=100)  # fills the graph's one-minute window
        pid = next(p["pid"] for p in backend.supervisor.processes() if p["name"] == DASHBOARD_PROGRAM)
        rss, peak = rss_mb(pid)
        results["dashboard_memory_mb"] = {"rss": round(rss, 1), "peak": round(peak, 1)}
    finally:
        backend.down()


def viewer(url: str):
    """What an open dashboard page asks for every few seconds."""
    session = requests.Session()
    session.trust_env = False

    def refresh() -> None:
        for path in ("/graph.json", "/table", "/series/versions.svg", "/series/codes.svg"):
            session.get(url + path, timeout=10)

    return repeating(refresh, REFRESH_SECONDS)


def bench_apply(backend: LocalBackend) -> dict:
    template = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: minimal-virtualservice, namespace: default}}
spec:
  hosts: [minimal.svc.kind.org]
  gateways: [services-gateway]
  http:
    - headers: {{response: {{set: {{x-generation: "{n}"}}}}}}
      route: [{{destination: {{host: minimal-service, port: {{number: 9090}}}}}}]
"""
    session = requests.Session()
    session.trust_env = False
    times = []
    for n in range(1, 11):
        started = time.perf_counter()
        backend.apply(template.format(n=n), "bench")
        while session.get(backend.ingress_url, headers={"Host": "minimal.svc.kind.org"}, timeout=5).headers.get(
            "x-generation"
        ) != str(n):
            pass
        times.append((time.perf_counter() - started) * 1000)
    return {"median": round(statistics.median(times), 1), "max": round(max(times), 1)}


def bench_scenarios(results: dict) -> None:
    state = Path(tempfile.mkdtemp()) / "state"
    base, _claim = claim_address_base()
    env = {
        **os.environ,
        "MESHY_STATE": str(state),
        "MESHY_ADDRESS_BASE": str(base),
        "MESHY_INGRESS": f"127.0.0.1:{free_port()}",
        "MESHY_DASHBOARD": f"127.0.0.1:{free_port()}",
    }
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "invoke", "demo", "--down"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    results["demo_cold_s"] = round(time.perf_counter() - started, 1)
    results["scenario_s"] = {
        path.stem: round(json.loads(path.read_text())["seconds"], 2)
        for path in sorted((ROOT / "reports/local").glob("*.json"))
    }


def main() -> int:
    results: dict = {"machine": machine()}
    steps = (bench_service, bench_cold_start, bench_mesh, bench_dashboard, bench_scenarios)
    only = sys.argv[1:]  # e.g. `scripts/bench.py dashboard`: some steps only
    for step in [s for s in steps if not only or s.__name__.removeprefix("bench_") in only]:
        print(f"• {step.__name__.removeprefix('bench_')} ...", flush=True)
        try:
            step(results)
        except RuntimeError as error:  # hey missing, and the like: one line, not a traceback
            print(f"error: {error}", file=sys.stderr)
            return 1
    OUT.mkdir(parents=True, exist_ok=True)
    name = "bench.json" if not only else f"bench-{'-'.join(only)}.json"
    (OUT / name).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
