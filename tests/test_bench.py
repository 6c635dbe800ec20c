import math

from meshy.bench import parse_hey

SAMPLE = """
Summary:
  Total:\t5.0021 secs
  Slowest:\t0.0213 secs
  Fastest:\t0.0001 secs
  Average:\t0.0039 secs
  Requests/sec:\t8123.4567

Latency distribution:
  10% in 0.0011 secs
  50% in 0.0021 secs
  90% in 0.0051 secs
  99% in 0.0123 secs

Status code distribution:
  [200]\t40600 responses
  [503]\t17 responses
"""


def test_parse_hey_summary():
    load = parse_hey(SAMPLE)
    assert math.isclose(load.rps, 8123.4567)
    assert math.isclose(load.p50_ms, 2.1) and math.isclose(load.p90_ms, 5.1) and math.isclose(load.p99_ms, 12.3)
    assert load.errors == 17


def test_parse_hey_without_numbers():
    load = parse_hey("nothing here")
    assert load.rps == 0.0 and math.isnan(load.p99_ms)


def test_paced_load_counts_successes_at_its_rate(start_service):
    import time

    from meshy.bench import PacedLoad

    service = start_service(LOG_REQUESTS="0")
    with PacedLoad(service.url + "/", rate=100, clients=4) as load:
        time.sleep(2)
    # 200 requests wanted; a shared machine may fall behind, never run ahead.
    assert 50 <= load.outcome.ok <= 215
    assert load.outcome.failed == 0


def test_paced_load_records_each_failure(start_service):
    import time

    from meshy.bench import PacedLoad

    service = start_service(DISCARD_QUOTA="100", REJECT="1")  # every request gets 500 by configuration
    with PacedLoad(service.url + "/", rate=50, clients=2) as load:
        time.sleep(1)
    assert load.outcome.ok == 0
    assert load.outcome.failed == len(load.outcome.failures) > 0
    assert {kind for _, kind in load.outcome.failures} == {"HTTP 500"}


def load_bench_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "bench.py"
    spec = importlib.util.spec_from_file_location("bench_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scale_manifests_are_what_the_backend_accepts():
    from meshy.local.resources import parse_documents

    bench = load_bench_script()
    routes = parse_documents(bench.virtual_services(range(3), 7), "bench")
    assert [r.spec["hosts"] for r in routes] == [[f"scale-{i}.svc.kind.org"] for i in range(3)]
    assert {r.spec["http"][0]["headers"]["response"]["set"]["x-generation"] for r in routes} == {"7"}
    workload = parse_documents(bench.scale_workload(5), "bench")
    assert [r.kind for r in workload] == ["Deployment", "Service", "VirtualService"]
    assert workload[0].spec["replicas"] == 5
