"""The report's pictures show the intervals the verdicts were judged by."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot  # noqa: E402

from meshy import stats  # noqa: E402
from meshy.scenarios import report  # noqa: E402
from meshy.scenarios.checks import mean_band, mean_check  # noqa: E402
from meshy.scenarios.verdict import ALPHA, Phase, Report  # noqa: E402


def test_share_bars_carry_the_verdicts_wilson_interval():
    figure, axis = pyplot.subplots()
    report.draw_shares(axis, Phase("split", {"v1": 480, "v2": 520}, {"v1": 0.5, "v2": 0.5}))
    (container,) = [c for c in axis.containers if hasattr(c, "lines")]  # the error bars over the bars
    segments = container.lines[2][0].get_segments()
    expected = stats.wilson(480, 1000, ALPHA)
    assert math.isclose(segments[0][0][1], expected.low) and math.isclose(segments[0][1][1], expected.high)
    pyplot.close(figure)


def test_mean_panel_shows_the_acceptance_band_of_the_mean_check(tmp_path):
    low, high = mean_band(200, 3.33, 7.8)
    check = mean_check("per call", 680, 200, 3.33, 7.8, "geometric")
    assert f"[{low:.3f}, {high:.3f}]" in check.detail
    figure, axis = pyplot.subplots()
    report.draw_means(axis, Phase("per call", {"after": 680}, means={"after": (3.4, low, high)}))
    (band,) = axis.collections
    ys = band.get_paths()[0].vertices[:, 1]
    assert math.isclose(ys.min(), low) and math.isclose(ys.max(), high)
    pyplot.close(figure)
    paths = report.write(
        Report("r", "local", "p", "s", phases=[Phase("per call", {"a": 1}, means={"a": (1, 1, 1)})]), tmp_path
    )
    assert paths[2].stat().st_size > 1000
