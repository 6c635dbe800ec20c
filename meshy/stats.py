"""The statistics behind every verdict: exact binomial tests, Wilson intervals, chi-square, sample sizes.

Standard library only; each function is pure and unit tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()


def z_two_sided(alpha: float) -> float:
    return _NORMAL.inv_cdf(1 - alpha / 2)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"[{self.low:.4f}, {self.high:.4f}]"


def wilson(successes: int, n: int, alpha: float) -> Interval:
    """Wilson score interval for a binomial proportion at confidence 1 - alpha."""
    if n <= 0:
        return Interval(0.0, 1.0)
    z = z_two_sided(alpha)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def binomial_p_value(successes: int, n: int, p: float) -> float:
    """Exact two-sided p-value of `successes` in n trials if the true share is p (twice the smaller tail).

    Unlike a Wilson interval it keeps its level when p is near 0 or 1: with p = 0.99944
    and n = 231, two failures happen in 0.8% of runs of a working feature.
    """
    if n <= 0:
        return 1.0
    if p <= 0.0 or p >= 1.0:
        return 1.0 if successes == round(p * n) else 0.0

    lower = sum(_binomial_pmf(k, n, p) for k in range(0, successes + 1))
    upper = sum(_binomial_pmf(k, n, p) for k in range(successes, n + 1))
    return min(1.0, 2 * min(lower, upper))


def binomial_lower_tail(successes: int, n: int, p: float) -> float:
    """P(X <= successes) for X ~ Binomial(n, p): the exact one-sided p-value against a share below p."""
    if n <= 0 or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if successes >= n else 0.0
    return min(1.0, sum(_binomial_pmf(k, n, p) for k in range(0, successes + 1)))


def _binomial_pmf(k: int, n: int, p: float) -> float:
    log = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return math.exp(log + k * math.log(p) + (n - k) * math.log1p(-p))


def proportion_sample_size(p0: float, p1: float, alpha: float, power: float) -> int:
    """Observations for a two-sided test at level alpha to tell p1 from p0 with the given power."""
    if p0 == p1:
        raise ValueError("p0 and p1 must differ to size a test")
    z_a = z_two_sided(alpha)
    z_b = _NORMAL.inv_cdf(power)
    numerator = z_a * math.sqrt(p0 * (1 - p0)) + z_b * math.sqrt(p1 * (1 - p1))
    return math.ceil((numerator / (p1 - p0)) ** 2)


def zero_events_sample_size(rate: float, alpha: float) -> int:
    """Observations so that seeing none of an event rules out a rate >= `rate` at level alpha."""
    return math.ceil(math.log(alpha) / math.log(1 - rate))


@dataclass(frozen=True)
class ChiSquare:
    statistic: float
    dof: int
    p_value: float


def chi_square_gof(observed: list[int], probabilities: list[float]) -> ChiSquare:
    """Pearson's goodness-of-fit test of counts against expected probabilities.

    Categories expected with probability 0 must be observed 0 times; they do
    not add degrees of freedom (a single hit there gives p = 0).
    """
    total = sum(observed)
    if total == 0:
        return ChiSquare(math.nan, 0, 0.0)  # nothing observed: nothing fits
    statistic = 0.0
    dof = -1
    for count, probability in zip(observed, probabilities, strict=True):
        if probability == 0:
            if count:
                return ChiSquare(math.inf, max(dof, 1), 0.0)
            continue
        expected = total * probability
        statistic += (count - expected) ** 2 / expected
        dof += 1
    if dof <= 0:
        return ChiSquare(0.0, 0, 1.0)
    return ChiSquare(statistic, dof, chi2_sf(statistic, dof))


def chi2_sf(x: float, dof: int) -> float:
    """Survival function of the chi-square distribution (regularised upper gamma)."""
    if x <= 0:
        return 1.0
    return _upper_gamma_regularised(dof / 2, x / 2)


def _upper_gamma_regularised(a: float, x: float) -> float:
    if x < a + 1:
        # Series for the lower function.
        term = total = 1 / a
        k = a
        for _ in range(1000):
            k += 1
            term *= x / k
            total += term
            if term < total * 1e-15:
                break
        return max(0.0, 1 - total * math.exp(-x + a * math.log(x) - math.lgamma(a)))
    # Continued fraction (Lentz) for the upper function.
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def truncated_geometric(failure: float, max_tries: int) -> tuple[float, float]:
    """Mean and variance of the tries per request, each failing with `failure`, at most max_tries."""
    probabilities = [failure ** (k - 1) * (1 - failure) for k in range(1, max_tries)]
    probabilities.append(failure ** (max_tries - 1))  # the last try happens whatever its outcome
    mean = sum(k * p for k, p in enumerate(probabilities, start=1))
    second = sum(k * k * p for k, p in enumerate(probabilities, start=1))
    return mean, second - mean * mean
