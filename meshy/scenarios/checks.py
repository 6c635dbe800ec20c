"""Turning observations into Checks: intervals and tests, each stated in words."""

from __future__ import annotations

import dataclasses
import math

from meshy import stats
from meshy.scenarios.verdict import ALPHA, Check


def share_check(name: str, hits: int, n: int, expected: float, why: str, at_least: bool = False) -> Check:
    # Judged by the exact binomial test: near 0 or 1 a Wilson interval rejects a working
    # feature far more often than alpha says. The interval is shown for scale.
    # at_least: a share that may exceed `expected` for reasons the scenario names fails only below it.
    if at_least:
        p_value, test = stats.binomial_lower_tail(hits, n, expected), "exact one-sided binomial test"
    else:
        p_value, test = stats.binomial_p_value(hits, n, expected), "exact binomial test"
    interval = stats.wilson(hits, n, ALPHA)
    return Check(
        name=name,
        measured=f"{hits / n:.4f} ({hits}/{n})" if n else "no requests",
        expected=f"{'>= ' if at_least else ''}{expected:.4f} ({why})",
        detail=f"{test} p = {p_value:.3g} ({'>=' if p_value >= ALPHA else '<'} alpha {ALPHA}); "
        f"{100 * (1 - ALPHA):.1f}% Wilson interval {interval}",
        passed=n > 0 and p_value >= ALPHA,
    )


def all_check(name: str, hits: int, n: int, what: str, rate: float) -> Check:
    return Check(
        name=name,
        measured=f"{hits}/{n}",
        expected=f"all {n} {what}",
        detail=f"none missing rules out a miss rate of {rate:.0%} or more at alpha {ALPHA}",
        passed=n > 0 and hits == n,
    )


def split_check(name: str, counts: dict[str, int], weights: dict[str, int]) -> Check:
    labels = list(weights)
    observed = [counts.get(label, 0) for label in labels]
    probabilities = [weights[label] / 100 for label in labels]
    test = stats.chi_square_gof(observed, probabilities)
    total = sum(observed)
    measured = " / ".join(
        f"{label} {count} ({count / max(total, 1):.1%})" for label, count in zip(labels, observed, strict=True)
    )
    expected = " / ".join(f"{label} {weights[label]}%" for label in labels)
    failed = counts.get("failed", 0)
    if failed:
        detail = f"{failed} requests failed or reached neither subset"
    elif any(p == 0 for p in probabilities):
        detail = "any request on a 0% subset fails the step"
    else:
        detail = f"chi-square {test.statistic:.2f} on {test.dof} dof, p = {test.p_value:.3g} (fails below {ALPHA})"
    return Check(name, measured, expected, detail, passed=total > 0 and not failed and test.p_value > ALPHA)


def mean_band(n: int, mean: float, variance: float) -> tuple[float, float]:
    """The acceptance band of a mean of n draws at ALPHA (normal approximation)."""
    half = stats.z_two_sided(ALPHA) * math.sqrt(variance / n) if n else math.inf
    return mean - half, mean + half


def mean_check(name: str, total: float, n: int, mean: float, variance: float, why: str) -> Check:
    measured = total / n if n else math.nan
    low, high = mean_band(n, mean, variance)
    return Check(
        name=name,
        measured=f"{measured:.3f} ({total:g} upstream requests / {n})",
        expected=f"{mean:.3f} ({why})",
        detail=f"{100 * (1 - ALPHA):.1f}% acceptance band [{low:.3f}, {high:.3f}] around the expectation",
        passed=n > 0 and low <= measured <= high,
    )


def exact_check(name: str, got: int, want: int, what: str) -> Check:
    return Check(name, str(got), f"{want} ({what})", "counted exactly", passed=got == want)


def with_detail(check: Check, note: str) -> Check:
    """The check with a note (e.g. a cross-check's figure) after how it was judged; the verdict is unchanged."""
    return dataclasses.replace(check, detail=f"{check.detail}; {note}")
