"""Writing a scenario's report as JSON, Markdown and a PNG of its distributions."""

from __future__ import annotations

import json
from pathlib import Path

from meshy import stats
from meshy.scenarios.verdict import ALPHA, Report


def write(report: Report, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / report.scenario
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")]
    paths[0].write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    paths[1].write_text(markdown(report))
    picture(report, paths[2])
    return paths


def markdown(report: Report) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [
        f"# {report.scenario}: {verdict}",
        "",
        f"Backend `{report.backend}`, Kubernetes/Istio pair `{report.pair}`, "
        f"{report.requests} requests in {report.seconds:.1f} s.",
        "",
        report.summary,
        "",
        "| check | measured | expected | how it was judged | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for check in report.checks:
        mark = "pass" if check.passed else "**FAIL**"
        lines.append(f"| {check.name} | {check.measured} | {check.expected} | {check.detail} | {mark} |")
    lines += ["", "## How the sample sizes were chosen", ""]
    lines += [f"- {line}" for line in report.design]
    lines += ["", f"![distributions]({report.scenario}.png)", ""]
    return "\n".join(lines)


def picture(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    phases = report.phases or []
    figure, axes = pyplot.subplots(1, max(1, len(phases)), figsize=(3.2 * max(1, len(phases)), 3.4), squeeze=False)
    for axis, phase in zip(axes[0], phases, strict=False):
        if phase.means:
            draw_means(axis, phase)
        else:
            draw_shares(axis, phase)
        axis.set_title(phase.name, fontsize=9)
        axis.tick_params(axis="x", labelsize=8)
    figure.suptitle(f"{report.scenario} ({report.backend}): {'passed' if report.passed else 'FAILED'}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


COLOURS = ["#4c72b0", "#dd8452", "#c44e52", "#55a868"]


def draw_shares(axis, phase) -> None:
    """Shares with their 99.9% Wilson intervals (the verdicts' interval) and the expected share dashed."""
    labels = list(phase.counts)
    total = sum(phase.counts.values())
    shares = [phase.counts[label] / (total or 1) for label in labels]
    intervals = [stats.wilson(phase.counts[label], total, ALPHA) for label in labels]
    errors = [
        [max(0.0, share - i.low) for share, i in zip(shares, intervals, strict=True)],
        [max(0.0, i.high - share) for share, i in zip(shares, intervals, strict=True)],
    ]
    bars = axis.bar(labels, shares, color=COLOURS[: len(labels)], yerr=errors, capsize=4, ecolor="black")
    axis.set_ylim(0, 1.15)
    axis.set_ylabel("share, 99.9% interval (dashed: expected)" if phase.expected else "share, 99.9% interval")
    for bar, label, interval in zip(bars, labels, intervals, strict=True):
        if label in phase.expected:
            left, width = bar.get_x(), bar.get_width()
            axis.hlines(phase.expected[label], left, left + width, colors="black", linestyles="dashed", linewidth=1)
        annotate(axis, bar, str(phase.counts[label]), above=interval.high)


def draw_means(axis, phase) -> None:
    """Means (e.g. attempts per call) with the acceptance band each was judged against."""
    labels = list(phase.means)
    values = [phase.means[label][0] for label in labels]
    bars = axis.bar(labels, values, color=COLOURS[: len(labels)])
    for bar, label in zip(bars, labels, strict=True):
        _, low, high = phase.means[label]
        axis.fill_between(
            [bar.get_x(), bar.get_x() + bar.get_width()], low, high, color="black", alpha=0.2, linewidth=0
        )
        annotate(axis, bar, f"{phase.means[label][0]:.2f}")
    axis.set_ylim(0, max(values + [high for _, _, high in phase.means.values()]) * 1.2 or 1)
    axis.set_ylabel("per call (grey: 99.9% acceptance band)")


def annotate(axis, bar, text: str, above: float = 0.0) -> None:
    """Write over the bar, clear of its error bar."""
    height = max(bar.get_height(), above)
    axis.annotate(text, (bar.get_x() + bar.get_width() / 2, height), ha="center", va="bottom", fontsize=8)
