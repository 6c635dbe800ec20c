"""Running scenarios by name, timing them and writing their reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from meshy import ROOT
from meshy.console import Console
from meshy.scenarios import (
    authorization,
    circuit_breaking,
    egress,
    fault_injection,
    gateway,
    ingress_passthrough,
    mirroring,
    mtls,
    outlier_detection,
    report,
    request_authentication,
    request_timeouts,
    retries,
    secure_ingress,
    tcp_traffic_shifting,
    tls_origination,
    traffic_shift,
)
from meshy.scenarios.backends import Backend
from meshy.scenarios.verdict import Report

SCENARIOS: dict[str, Callable[[Backend, Console], Report]] = {
    "gateway": gateway.run,
    "retries": retries.run,
    "traffic-shift": traffic_shift.run,
    "egress": egress.run,
    "request-timeouts": request_timeouts.run,
    "fault-injection": fault_injection.run,
    "mirroring": mirroring.run,
    "circuit-breaking": circuit_breaking.run,
    "outlier-detection": outlier_detection.run,
    "mtls": mtls.run,
    "authorization": authorization.run,
    "secure-ingress": secure_ingress.run,
    "tcp-traffic-shifting": tcp_traffic_shifting.run,
    "request-authentication": request_authentication.run,
    "tls-origination": tls_origination.run,
    "ingress-passthrough": ingress_passthrough.run,
}


def reports_dir(backend: str) -> Path:
    return ROOT / "reports" / backend


def run(name: str, backend: Backend, console: Console, out_dir: Path | None = None) -> Report:
    started = time.monotonic()
    result = SCENARIOS[name](backend, console)
    result.seconds = time.monotonic() - started
    paths = report.write(result, out_dir or reports_dir(backend.name))
    snapshot = getattr(backend, "snapshot", None)  # backends with a mesh-wide metrics endpoint and dashboard
    if snapshot is not None:
        snapshot(name, out_dir or reports_dir(backend.name), console)
    console.info(f"{name}: {'PASSED' if result.passed else 'FAILED'} in {result.seconds:.1f}s ({paths[1]})")
    for check in result.checks:
        console.info(f"   {'✓' if check.passed else '✗'} {check.name}: {check.measured} (expected {check.expected})")
    return result


def summary_table(results: list[Report]) -> str:
    header = ("SCENARIO", "VERDICT", "CHECKS", "REQUESTS", "SECONDS")
    rows = [header] + [
        (
            r.scenario,
            "pass" if r.passed else "FAIL",
            f"{sum(c.passed for c in r.checks)}/{len(r.checks)}",
            str(r.requests),
            f"{r.seconds:.1f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
