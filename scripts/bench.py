"""The README's speed, memory and reliability figures, measured on this machine (run: nox -s bench).

`python scripts/bench.py reliability` (or `nox -s reliability`) runs one step only.

minimal-service: requests/s on one core, p99 at 1,000 requests/s, resident memory.
Local backend: cold start to the first 200, apply-to-observed, latency per path
side by side with a bare hand-written Envoy, the dashboard's cost, each scenario's duration, demo cold;
manifests to a model or a one-line refusal (target: every refusal under 2 s).
Reliability: failed requests during reloads under load, recovery after SIGKILLs,
processes and ports left after `down` in each failure case.
Scale: 10 .. 2,000 VirtualServices and 1 .. 200 pods (reports/bench/scale.json,
scale.png). `scripts/bench.py scale dashboard` (or `nox -s bench -- scale`) runs only the named steps.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from meshy.bench import Load, PacedLoad, hey, repeating  # noqa: E402
from meshy.console import Console  # noqa: E402
from meshy.dashboard.page import REFRESH_SECONDS  # noqa: E402
from meshy.local.backend import DASHBOARD_PROGRAM, LocalBackend, LocalConfig, envoy_binary  # noqa: E402
from meshy.local.resources import parse_documents  # noqa: E402
from meshy.local.supervisor import leftover_pids  # noqa: E402
from meshy.local.topology import Layout  # noqa: E402
from meshy.net import claim_address_base, free_port, http_ok, port_in_use, wait_until  # noqa: E402
from meshy.render import render  # noqa: E402
from meshy.versions import select_pair  # noqa: E402

NO_PROXY = {"http": "", "https": ""}
OUT = ROOT / "reports" / "bench"
CLAIMS: list[object] = []
RELOADS = 30
RELOAD_RATE = 400
GENERATION_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: minimal-virtualservice, namespace: default}}
spec:
  hosts: [minimal.svc.kind.org]
  gateways: [services-gateway]
  http:
    - headers: {{response: {{set: {{x-generation: "{n}"}}}}}}
      route: [{{destination: {{host: minimal-service, port: {{number: 9090}}}}}}]
"""


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
    base, claim = claim_address_base()
    CLAIMS.append(claim)  # held until the benchmark ends: no other mesh takes the block
    return LocalBackend(
        LocalConfig(state, Layout("127.0.0.1", free_port(), base, dashboard_port=free_port())), Console(quiet=True)
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
        pid = next(p.pid for p in backend.supervisor.processes() if p.name == DASHBOARD_PROGRAM)
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
    template = GENERATION_VS
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


def mesh_env() -> tuple[dict[str, str], object]:
    """The environment for `inv` on a mesh of its own; keep the claim while it runs."""
    base, claim = claim_address_base()
    env = {
        **os.environ,
        "MESHY_STATE": str(Path(tempfile.mkdtemp()) / "state"),
        "MESHY_ADDRESS_BASE": str(base),
        "MESHY_INGRESS": f"127.0.0.1:{free_port()}",
        "MESHY_DASHBOARD": f"127.0.0.1:{free_port()}",
    }
    return env, claim


PLAINTEXT_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bench-plaintext, namespace: default}
spec:
  host: minimal-service
  trafficPolicy: {tls: {mode: DISABLE}}
"""


def bench_mtls(results: dict) -> None:
    """What auto mTLS costs on sidecar -> sidecar -> app at 1,000 req/s: the same path with a
    DestinationRule tls DISABLE, interleaved rounds (medians), on one mesh."""
    workdir = Path(tempfile.mkdtemp())
    backend = local_backend(workdir / "state")
    backend.up(select_pair())
    try:
        client = next(p for p in backend.pods() if p.deployment == "bounced-service")
        target = dict(url="http://minimal-service:9090/", proxy=f"http://{client.ip}:15001")
        rounds: dict[str, list[Load]] = {"mutual TLS (auto)": [], "plaintext (tls DISABLE)": []}
        for _ in range(3):
            for name in rounds:
                if name.startswith("plaintext"):
                    backend.apply(PLAINTEXT_RULE, "bench")
                hey(**target, seconds=1, workers=4)  # warm-up: new connections under the new setting
                rounds[name].append(paced(**target))
                if name.startswith("plaintext"):
                    backend.delete(PLAINTEXT_RULE, "bench")
        results["mtls_sidecar_to_sidecar_ms"] = {
            name: {
                q: round(statistics.median(getattr(load, f"{q}_ms") for load in loads), 3)
                for q in ("p50", "p90", "p99")
            }
            for name, loads in rounds.items()
        }
    finally:
        backend.down()


def bench_scenarios(results: dict) -> None:
    env, _claim = mesh_env()
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "invoke", "demo", "--down"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    results["demo_cold_s"] = round(time.perf_counter() - started, 1)
    results["scenario_s"] = {
        path.stem: round(json.loads(path.read_text())["seconds"], 2)
        for path in sorted((ROOT / "reports/local").glob("*.json"))
    }


def run_seconds(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one `python -m invoke ARGS` (a fresh interpreter, as a shell starts it).

    The CPU time is the process's own work: other work on a shared machine
    stretches the wall time (waiting for a core), hardly the CPU time.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_cli(results: dict, rounds: int = 21) -> None:
    """inv's own cost: each command against `inv --list` over a one-task tasks.py, interleaved.

    Every round runs each command once, the status of a running mesh included
    (a second mesh environment, up for all rounds), so load from other work
    on a shared machine falls on all of them alike. Wall-time ratios are of
    medians and of minimums (other work only ever adds time, so the minimum
    is the closest to each command's own cost); CPU-time ratios of medians.
    """
    empty = Path(tempfile.mkdtemp())
    (empty / "tasks.py").write_text("from invoke import task\n\n\n@task\ndef noop(c):\n    pass\n")
    env, _claim = mesh_env()
    running_env, _running_claim = mesh_env()
    commands = {
        BASELINE: (empty, ["--list"], env),
        "inv --list": (ROOT, ["--list"], env),
        "inv --help local.status": (ROOT, ["--help", "local.status"], env),
        "inv local.status (nothing running)": (ROOT, ["local.status"], env),
        "inv local.status (mesh running)": (ROOT, ["local.status"], running_env),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    subprocess.run(
        [sys.executable, "-m", "invoke", "local.up"], cwd=ROOT, env=running_env, check=True, capture_output=True
    )
    try:
        for _ in range(rounds):
            for name, (cwd, args, command_env) in commands.items():
                runs[name].append(run_seconds(args, cwd, command_env))
    finally:
        subprocess.run([sys.executable, "-m", "invoke", "local.down"], cwd=ROOT, env=running_env, capture_output=True)
    down = []
    for _ in range(3):
        subprocess.run([sys.executable, "-m", "invoke", "local.up"], cwd=ROOT, env=env, check=True, capture_output=True)
        down.append(run_seconds(["local.down"], ROOT, env))
    runs["inv local.down (mesh running)"] = down
    results["cli_s"] = {name: cli_figures(values, runs[BASELINE]) for name, values in runs.items()}


BASELINE = "baseline: inv --list, one-task tasks.py"


def cli_figures(runs: list[tuple[float, float]], baseline: list[tuple[float, float]]) -> dict[str, float]:
    """Medians and minimums of wall and CPU time, and their ratios to the baseline's."""
    wall, cpu = [w for w, _ in runs], [c for _, c in runs]
    base_wall, base_cpu = [w for w, _ in baseline], [c for _, c in baseline]
    return {
        "median": round(statistics.median(wall), 3),
        "min": round(min(wall), 3),
        "ratio_median": round(statistics.median(wall) / statistics.median(base_wall), 2),
        "ratio_min": round(min(wall) / min(base_wall), 2),
        "cpu_median": round(statistics.median(cpu), 3),
        "cpu_ratio_median": round(statistics.median(cpu) / statistics.median(base_cpu), 2),
    }


# --- reliability ------------------------------------------------------------------


def timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def fresh_mesh() -> LocalBackend:
    backend = local_backend(Path(tempfile.mkdtemp()) / "state")
    backend.up(select_pair())
    return backend


def load_on(backend: LocalBackend, rate: float) -> PacedLoad:
    return PacedLoad(backend.ingress_url + "/", rate, host="minimal.svc.kind.org")


def reloads_under_load() -> dict:
    """Failed requests through the ingress while 30 route changes are applied at 400 req/s."""
    backend = fresh_mesh()
    try:
        with load_on(backend, RELOAD_RATE) as load:
            time.sleep(1)
            started = time.monotonic()
            for n in range(1, RELOADS + 1):
                backend.apply(GENERATION_VS.format(n=n), "bench")
                time.sleep(0.1)
            seconds = time.monotonic() - started
            time.sleep(1)
        outcome = load.outcome
        return {
            "reloads": RELOADS,
            "rate_wanted": RELOAD_RATE,
            "requests": outcome.ok + outcome.failed,
            "failed": outcome.failed,
            "reload_window_s": round(seconds, 2),
            "failures": sorted({kind for _, kind in outcome.failures}),
        }
    finally:
        backend.down()


def program_pid(backend: LocalBackend, name: str) -> int:
    """The pid of the process serving a program: after a hand-over the adopted one, not its launcher."""
    return next(p.pid for p in backend.supervisor.processes() if p.name == name)


def recovered(backend: LocalBackend, program: str, before: int) -> bool:
    """The program runs again under a new pid and the walkthrough's path answers."""
    try:
        if program_pid(backend, program) in (0, before):
            return False
    except (OSError, xmlrpc.client.Error):
        return False
    response = requests.get(backend.ingress_url, headers={"Host": "minimal.svc.kind.org"}, timeout=1, proxies=NO_PROXY)
    return response.status_code == 200


def kill_and_recover(backend: LocalBackend, load: PacedLoad, program: str) -> dict:
    """Seconds from SIGKILL of one program to serving again, and requests failed meanwhile."""
    time.sleep(1.5)  # past startsecs, so the last (re)start counts as a success
    failed_before = load.outcome.failed
    before = program_pid(backend, program)
    started = time.monotonic()
    os.kill(before, signal.SIGKILL)
    ok = wait_until(lambda: recovered(backend, program, before), timeout=30, interval=0.01)
    return {
        "recovery_s": round(time.monotonic() - started, 3) if ok else None,
        "failed_requests": load.outcome.failed - failed_before,
    }


def kill_supervisord(backend: LocalBackend) -> dict[str, int]:
    """SIGKILL supervisord; return the pids of the programs it leaves running."""
    time.sleep(1.5)
    orphans = {p.name: p.pid for p in backend.supervisor.processes()}
    os.kill(backend.supervisor.pid(), signal.SIGKILL)
    wait_until(lambda: not backend.supervisor.running(), timeout=5, interval=0.01)
    time.sleep(1)  # the mesh serves on, unsupervised
    return orphans


def handed_over(backend: LocalBackend, orphans: dict[str, int]) -> dict:
    """Whether up left every program supervised, by the process that served before, and the mesh ready."""
    processes = backend.supervisor.processes()
    return {
        "programs_supervised": sum(p.state in ("STARTING", "RUNNING") for p in processes),
        "programs_adopted": sum(p.pid == orphans.get(p.name) for p in processes),
        "programs": len(orphans),
        "ready": all(row.ready for row in backend.status()),
    }


def hand_over_figures(backend: LocalBackend, load: PacedLoad) -> dict:
    """SIGKILL of supervisord, then `up` (in this process, then `inv local.up` as a user runs it) under load."""
    failed_before = load.outcome.failed
    orphans = kill_supervisord(backend)
    unsupervised_failed = load.outcome.failed - failed_before
    recovery = timed(lambda: backend.up(select_pair()))
    figures = {
        "recovery_s": round(recovery, 3),
        **handed_over(backend, orphans),
        "failed_requests_unsupervised": unsupervised_failed,
        "failed_requests_during_recovery": load.outcome.failed - failed_before - unsupervised_failed,
    }
    failed_before = load.outcome.failed
    orphans = kill_supervisord(backend)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "local.up"], cwd=ROOT, env=cli_env(backend), capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"inv local.up failed to take the mesh over: {done.stderr.strip()}")
    figures["inv_local_up_s"] = round(time.monotonic() - started, 3)
    figures["inv_local_up"] = handed_over(backend, orphans)
    figures["failed_requests_around_inv_local_up"] = load.outcome.failed - failed_before
    return figures


def recovery_after_kills() -> dict:
    """Seconds from SIGKILL to serving again, per victim, and requests failed meanwhile (load at 200 req/s)."""
    backend = fresh_mesh()
    figures = {}
    try:
        pod = next(p for p in backend.pods() if p.deployment == "minimal-service")
        victims = {
            "sidecar": f"proxy_{pod.name}",
            "app": f"app_{pod.name}",
            "ingress gateway": "proxy_istio-ingressgateway",
        }
        with load_on(backend, 200) as load:
            for label, program in victims.items():
                figures[label] = kill_and_recover(backend, load, program)
            figures["supervisord"] = hand_over_figures(backend, load)
            # An adopted program that dies is restarted by the new supervisord like any other.
            for label, program in victims.items():
                figures[f"{label} after the hand-over"] = kill_and_recover(backend, load, program)
        return figures
    finally:
        backend.down()


def bound(backend: LocalBackend) -> list[tuple[str, int]]:
    layout = backend.config.layout
    addresses = [(layout.ingress_host, layout.ingress_port), (layout.external_ip, 9090)]
    return addresses + [
        (ip(i), port) for ip in (layout.pod_ip, layout.app_ip) for i in range(3) for port in (9090, 15001)
    ]


def cli_env(backend: LocalBackend) -> dict[str, str]:
    """The environment that points inv at this backend's state directory and addresses."""
    layout = backend.config.layout
    env = {**os.environ, "MESHY_STATE": str(backend.dir), "MESHY_ADDRESS_BASE": str(layout.base)}
    env["MESHY_INGRESS"] = f"{layout.ingress_host}:{layout.ingress_port}"
    env["MESHY_DASHBOARD"] = f"{layout.dashboard_host}:{layout.dashboard_port}"
    return env


def inv_up(backend: LocalBackend) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "local.up"],
        cwd=ROOT,
        env=cli_env(backend),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: len(leftover_pids(backend.dir)) >= 4, timeout=30, interval=0.01)
    return process


def interrupted_up(sig: int) -> LocalBackend:
    backend = local_backend(Path(tempfile.mkdtemp()) / "state")
    process = inv_up(backend)
    process.send_signal(sig)
    process.wait()
    return backend


def damaged(damage) -> LocalBackend:
    backend = fresh_mesh()
    damage(backend)
    return backend


def leftovers_after_down() -> dict:
    """Processes and bound ports left after `down`, per way the mesh was left, and how long down took."""
    cases = {
        "clean": lambda: damaged(lambda b: None),
        "garbage pid file": lambda: damaged(lambda b: b.supervisor.pidfile.write_text("garbage")),
        "state directory deleted": lambda: damaged(lambda b: shutil.rmtree(b.dir)),
        "supervisord killed": lambda: damaged(lambda b: os.kill(b.supervisor.pid(), signal.SIGKILL)),
        "inv killed during up": lambda: interrupted_up(signal.SIGKILL),
        "Ctrl-C during up": lambda: interrupted_up(signal.SIGINT),
    }
    figures = {}
    for label, make in cases.items():
        backend = make()
        running = len(leftover_pids(backend.dir))
        seconds = timed(backend.down)
        figures[label] = {
            "processes_before": running,
            "down_s": round(seconds, 3),
            "processes_left": len(leftover_pids(backend.dir)),
            "ports_left": sum(port_in_use(*a) for a in bound(backend)),
        }
    return figures


def down_many() -> dict:
    """`down` of a mesh with about 50 processes (20 more pods of minimal-service)."""
    backend = fresh_mesh()
    try:
        backend.apply(
            render("services/minimal-service.yaml.j2", select_pair()).replace("replicas: 1", "replicas: 21"), "bench"
        )
    except BaseException:
        backend.down()
        raise
    processes = len(leftover_pids(backend.dir))
    seconds = timed(backend.down)
    return {"processes": processes, "down_s": round(seconds, 3), "processes_left": len(leftover_pids(backend.dir))}


def bench_reliability(results: dict) -> None:
    # Recovery restarts processes, so it is slower the busier the machine: the load goes with the figures.
    results["load_average_before"] = os.getloadavg()
    backend = local_backend(Path(tempfile.mkdtemp()) / "state")
    try:
        results["cold_start_same_run_s"] = round(backend.up(select_pair()), 3)
    finally:
        backend.down()
    results["reliability"] = {
        "reloads_under_load": reloads_under_load(),
        "recovery_after_sigkill": recovery_after_kills(),
        "leftovers_after_down": leftovers_after_down(),
        "down_with_many_processes": down_many(),
    }


# --- Scale: cost against the number of routes and of pods --------------------------

ROUTE_SIZES = (10, 100, 500, 1000, 2000)
POD_SIZES = (1, 10, 50, 100, 200)


def virtual_services(names: range, generation: int = 0) -> str:
    """One gateway VirtualService per name, each on its own host."""
    return "\n---\n".join(
        f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: scale-{i}, namespace: default}}
spec:
  hosts: [scale-{i}.svc.kind.org]
  gateways: [services-gateway]
  http:
  - headers: {{response: {{set: {{x-generation: "{generation}"}}}}}}
    route: [{{destination: {{host: minimal-service}}}}]"""
        for i in names
    )


def scale_workload(replicas: int) -> str:
    """A Deployment of `replicas` pods behind scale.svc.kind.org."""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: scale, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: scale}}}}
  template:
    metadata: {{labels: {{app: scale}}}}
    spec:
      containers:
      - name: minimal-service
        image: localhost:5000/minimal-service:v1.0.0
        ports: [{{containerPort: 9090}}]
        env: [{{name: SERVICE_PORT, value: "9090"}}, {{name: LOG_REQUESTS, value: "0"}}]
---
apiVersion: v1
kind: Service
metadata: {{name: scale, namespace: default}}
spec:
  selector: {{app: scale}}
  ports: [{{name: http, port: 9090, targetPort: 9090}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: scale, namespace: default}}
spec:
  hosts: [scale.svc.kind.org]
  gateways: [services-gateway]
  http:
  - route: [{{destination: {{host: scale}}}}]
"""


def seen(session: requests.Session, backend: LocalBackend, host: str, generation: int | None = None) -> None:
    """Until the host answers 200 through the ingress (with that generation header, if given)."""
    url = backend.ingress_url
    while True:
        try:
            response = session.get(url, headers={"Host": host}, timeout=5)
        except requests.RequestException:
            continue
        if response.status_code == 200 and (
            generation is None or response.headers.get("x-generation") == str(generation)
        ):
            return


# Small applies per size: the median of this many, on a machine shared with other work.
SMALL_APPLIES = 9


def small_apply(backend: LocalBackend, session: requests.Session, generation: int) -> tuple[float, float]:
    """One VirtualService changed, to the change seen in traffic: wall seconds, and the CPU seconds
    the applying process spent (what other work on the machine disturbs least)."""
    started, cpu = time.perf_counter(), time.process_time()
    backend.apply(virtual_services(range(1), generation), "bench")
    spent = time.process_time() - cpu
    seen(session, backend, "scale-0.svc.kind.org", generation)
    return time.perf_counter() - started, spent


def bench_scale_routes(backend: LocalBackend, session: requests.Session) -> list[dict]:
    rows = []
    for size in ROUTE_SIZES:
        text = virtual_services(range(size), size)
        started = time.perf_counter()
        parse_documents(text, "bench")
        parse = time.perf_counter() - started
        started = time.perf_counter()
        backend.apply(text, "bench")
        seen(session, backend, f"scale-{size - 1}.svc.kind.org", size)
        one_apply = time.perf_counter() - started
        small = [small_apply(backend, session, size * 100 + n) for n in range(1, SMALL_APPLIES + 1)]
        rows.append(
            {
                "virtual_services": size,
                "one_apply_to_last_route_s": round(one_apply, 3),
                "of_which_yaml_parse_s": round(parse, 3),
                "small_apply_on_top_s": round(statistics.median(wall for wall, _ in small), 3),
                "small_apply_cpu_s": round(statistics.median(cpu for _, cpu in small), 4),
                "load_average": os.getloadavg()[0],
            }
        )
        print(f"  {rows[-1]}", flush=True)
        backend.delete(text, "bench")
    return rows


def small_apply_ratio(backend: LocalBackend, session: requests.Session, rounds: int = 5, each: int = 3) -> dict:
    """One small apply on top of 10 and on top of 1,000 VirtualServices, in interleaved rounds.

    Each round applies the other 990 VirtualServices, measures, deletes them and
    measures again, so load that other work puts on the machine falls on both
    sizes alike; ratios of medians, and of minimums (which that load cannot inflate).
    """
    base, extra = virtual_services(range(10), 0), virtual_services(range(10, 1000), 0)
    backend.apply(base, "bench")
    times: dict[int, list[float]] = {10: [], 1000: []}
    generation = 10**6
    for _ in range(rounds):
        for size in (1000, 10):
            if size == 1000:
                backend.apply(extra, "bench")
            else:
                backend.delete(extra, "bench")
            for _ in range(each):
                generation += 1
                times[size].append(small_apply(backend, session, generation)[0])
    backend.delete(base, "bench")
    return {
        "rounds": rounds,
        "applies_per_size": rounds * each,
        "median_10_s": round(statistics.median(times[10]), 3),
        "median_1000_s": round(statistics.median(times[1000]), 3),
        "min_10_s": round(min(times[10]), 3),
        "min_1000_s": round(min(times[1000]), 3),
        "ratio_of_medians": round(statistics.median(times[1000]) / statistics.median(times[10]), 2),
        "ratio_of_minimums": round(min(times[1000]) / min(times[10]), 2),
        "load_average": os.getloadavg()[0],
    }


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_scale_pods(backend: LocalBackend, session: requests.Session) -> list[dict]:
    rows = []
    for size in POD_SIZES:
        started = time.perf_counter()
        backend.apply(scale_workload(size), "bench")
        seen(session, backend, "scale.svc.kind.org")
        ready = time.perf_counter() - started
        pids = {p.name: p.pid for p in backend.supervisor.processes()}
        pods = [pod.name for pod in backend.pods() if pod.deployment == "scale"]
        per_pod = [pss_mb(pids[f"app_{name}"]) + pss_mb(pids[f"proxy_{name}"]) for name in pods]
        answers = [
            session.get(backend.ingress_url, headers={"Host": "scale.svc.kind.org"}, timeout=5) for _ in range(200)
        ]
        rows.append(
            {
                "pods": len(pods),
                "scale_apply_to_all_ready_s": round(ready, 2),
                "pss_per_pod_mb": round(statistics.mean(per_pod), 1),
                "requests_ok_of_200": sum(1 for a in answers if a.status_code == 200),
                "distinct_pods_serving": len({a.json()["servedBy"] for a in answers if a.status_code == 200}),
            }
        )
        print(f"  {rows[-1]}", flush=True)
    started = time.perf_counter()
    backend.down()
    rows[-1]["down_s"] = round(time.perf_counter() - started, 2)
    return rows


def plot_scale(routes: list[dict], pods: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    sizes = [r["virtual_services"] for r in routes]
    left.plot(
        sizes, [r["one_apply_to_last_route_s"] for r in routes], "o-", label="all in one apply, to the last route"
    )
    left.plot(sizes, [r["of_which_yaml_parse_s"] for r in routes], "s--", label="of which YAML parsing")
    left.plot(sizes, [r["small_apply_on_top_s"] for r in routes], "^-", label="one small apply on top")
    left.set(xlabel="VirtualServices", ylabel="seconds", title="Routes")
    left.legend()
    counts = [r["pods"] for r in pods]
    right.plot(
        counts,
        [r["scale_apply_to_all_ready_s"] for r in pods],
        "o-",
        label="scaling up from the previous size, to all ready (s)",
    )
    right.set(xlabel="pods", ylabel="seconds", title="Pods")
    twin = right.twinx()
    twin.plot(counts, [r["pss_per_pod_mb"] for r in pods], "s--", color="tab:red", label="PSS per pod (MB)")
    twin.set_ylabel("MB per pod")
    right.legend(loc="upper left")
    twin.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def bench_scale(results: dict) -> None:
    base, _claim = claim_address_base()
    session = requests.Session()
    session.trust_env = False
    backend = LocalBackend(
        LocalConfig(Path(tempfile.mkdtemp()) / "state", Layout("127.0.0.1", free_port(), base)), Console(quiet=True)
    )
    try:
        backend.up(select_pair())
        routes = bench_scale_routes(backend, session)
        interleaved = small_apply_ratio(backend, session)
        print(f"  {interleaved}", flush=True)
        pods = bench_scale_pods(backend, session)
    finally:
        backend.down()
    by_size = {r["virtual_services"]: r for r in routes}
    scale = {
        "machine": machine(),
        "routes": routes,
        "pods": pods,
        # The target (<= 1.5x): interleaved rounds on one mesh, so the machine's other work falls on both sizes.
        "small_apply_interleaved_1000_vs_10": interleaved,
        "small_apply_ratio_1000_to_10": round(
            by_size[1000]["small_apply_on_top_s"] / by_size[10]["small_apply_on_top_s"], 2
        ),
        "small_apply_cpu_ratio_1000_to_10": round(
            by_size[1000]["small_apply_cpu_s"] / by_size[10]["small_apply_cpu_s"], 2
        ),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scale.json").write_text(json.dumps(scale, indent=1) + "\n")
    plot_scale(routes, pods, OUT / "scale.png")
    results["scale"] = scale


def bench_validation(results: dict) -> None:
    """Manifests to a model or a refusal (parse, validate, build; no Envoy): the walkthrough, 240
    seeded hostile mutations of it (tests/test_local_hostile.py) and a 4 MiB manifest."""
    import random

    from tests import test_local_hostile as hostile

    documents = hostile.walkthrough_documents()
    text = hostile.yaml.safe_dump_all(documents, sort_keys=False)

    def timed(data) -> float:
        started = time.perf_counter()
        hostile.feed(data)
        return time.perf_counter() - started

    accepted = [timed(text) for _ in range(20)]
    rng = random.Random(hostile.SEED)
    mutated = [timed(hostile.mutate(documents, rng)) for _ in range(hostile.CASES)]
    huge = timed("a: " + "x" * (4 * 1024 * 1024 - 3))
    results["validation_ms"] = {
        "walkthrough_median": round(statistics.median(accepted) * 1000, 2),
        "mutated_median": round(statistics.median(mutated) * 1000, 2),
        "mutated_max": round(max(mutated) * 1000, 2),
        "4MiB_manifest": round(huge * 1000, 2),
    }


STEPS = (
    bench_validation,
    bench_service,
    bench_cold_start,
    bench_mesh,
    bench_mtls,
    bench_dashboard,
    bench_scenarios,
    bench_cli,
    bench_reliability,
    bench_scale,
)


def main() -> int:
    results: dict = {"machine": machine()}
    wanted = sys.argv[1:]  # step names (service, cli, ...): only those; default all
    for step in [s for s in STEPS if not wanted or s.__name__.removeprefix("bench_") in wanted]:
        print(f"• {step.__name__.removeprefix('bench_')} ...", flush=True)
        try:
            step(results)
        except RuntimeError as error:  # hey missing, and the like: one line, not a traceback
            print(f"error: {error}", file=sys.stderr)
            return 1
    OUT.mkdir(parents=True, exist_ok=True)
    # A partial run (`nox -s bench -- cli`) keeps the full run's file.
    (OUT / ("-".join(["bench", *wanted]) + ".json")).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
