"""Request counters and a latency histogram in Prometheus text format."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Any path is served, so path labels are capped to keep /metrics bounded.
MAX_PATHS = 64
OTHER_PATH = "other"


@dataclass
class Metrics:
    requests: Counter = field(default_factory=Counter)
    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    latency_count: int = 0
    _paths: set[str] = field(default_factory=set)

    def observe(self, path: str, method: str, code: int, seconds: float) -> None:
        if path not in self._paths:
            if len(self._paths) >= MAX_PATHS:
                path = OTHER_PATH
            else:
                self._paths.add(path)
        self.requests[(path, method, code)] += 1
        self.bucket_counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def render(self) -> str:
        lines = [
            "# HELP minimal_service_requests_total Requests served, by path, method and status code.",
            "# TYPE minimal_service_requests_total counter",
        ]
        for (path, method, code), count in sorted(self.requests.items()):
            lines.append(
                f'minimal_service_requests_total{{path="{_escape(path)}",method="{method}",code="{code}"}} {count}'
            )
        lines += [
            "# HELP minimal_service_request_duration_seconds Time from request start to response end.",
            "# TYPE minimal_service_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(BUCKETS, self.bucket_counts, strict=False):
            cumulative += count
            lines.append(f'minimal_service_request_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'minimal_service_request_duration_seconds_bucket{{le="+Inf"}} {self.latency_count}')
        lines.append(f"minimal_service_request_duration_seconds_sum {self.latency_sum:.6f}")
        lines.append(f"minimal_service_request_duration_seconds_count {self.latency_count}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
