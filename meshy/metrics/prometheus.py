"""Prometheus text format (0.0.4) -> samples, and sums over Istio's labels.

One parser for both backends: an Istio proxy's /stats/prometheus on kind,
the local mesh's telemetry endpoint locally.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from meshy.errors import MeshyError

LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class FormatError(MeshyError, ValueError):
    """Text that is not Prometheus exposition format."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float

    def matches(self, name: str, wanted: dict[str, str]) -> bool:
        return self.name == name and all(self.labels.get(k) == v for k, v in wanted.items())


def parse(text: str) -> list[Sample]:
    samples = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        if not match:
            raise FormatError(f"line {number} is not a Prometheus sample: {line[:80]!r}")
        name, label_text, value = match.groups()
        samples.append(Sample(name, parse_labels(label_text or "", number), parse_value(value, number)))
    return samples


def parse_labels(text: str, number: int) -> dict[str, str]:
    labels, position = {}, 0
    while position < len(text):
        match = LABEL.match(text, position)
        if not match:
            raise FormatError(f"line {number}: cannot read the labels from {text[position:][:60]!r}")
        labels[match.group(1)] = re.sub(r"\\[\\\"n]", lambda m: UNESCAPE[m.group(0)], match.group(2))
        position = match.end()
    return labels


def parse_value(text: str, number: int) -> float:
    special = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
    if text in special:
        return special[text]
    try:
        return float(text)
    except ValueError:
        raise FormatError(f"line {number}: {text!r} is not a number") from None


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels` (PromQL's sum(name{...}))."""
    return sum(s.value for s in samples if s.matches(name, labels))


def by_label(samples: list[Sample], name: str, label: str, **labels: str) -> dict[str, float]:
    """sum by (label) (name{...})."""
    result: dict[str, float] = {}
    for sample in samples:
        if sample.matches(name, labels):
            key = sample.labels.get(label, "")
            result[key] = result.get(key, 0.0) + sample.value
    return result


def exposition(samples: list[Sample]) -> str:
    """Samples back as text format 0.0.4 (what `parse` reads), one line each."""
    lines = []
    for sample in samples:
        labels = ",".join(f'{k}="{escape(v)}"' for k, v in sample.labels.items())
        value = format_value(sample.value)
        lines.append(f"{sample.name}{{{labels}}} {value}" if labels else f"{sample.name} {value}")
    return "".join(line + "\n" for line in lines)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))
