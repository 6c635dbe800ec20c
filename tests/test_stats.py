import math

import pytest

from meshy import stats


def test_wilson_contains_truth_and_narrows_with_n():
    small = stats.wilson(30, 100, 0.001)
    large = stats.wilson(3000, 10000, 0.001)
    assert 0.3 in small and 0.3 in large
    assert (large.high - large.low) < (small.high - small.low) / 5


def test_wilson_known_value():
    # 95% Wilson interval for 81/263 is [0.2553, 0.3662] (Newcombe 1998).
    interval = stats.wilson(81, 263, 0.05)
    assert interval.low == pytest.approx(0.2553, abs=5e-4)
    assert interval.high == pytest.approx(0.3662, abs=5e-4)


def test_wilson_edges():
    assert stats.wilson(0, 50, 0.01).low == 0.0
    assert stats.wilson(50, 50, 0.01).high == 1.0
    assert stats.wilson(0, 0, 0.01) == stats.Interval(0.0, 1.0)


@pytest.mark.parametrize(
    ("x", "dof", "expected"),
    [(3.841459, 1, 0.05), (10.827566, 1, 0.001), (5.991465, 2, 0.05), (16.918978, 9, 0.05), (0.0, 3, 1.0)],
)
def test_chi2_sf_matches_tables(x, dof, expected):
    assert stats.chi2_sf(x, dof) == pytest.approx(expected, rel=1e-4)


def test_chi_square_gof_accepts_fair_and_rejects_skewed():
    assert stats.chi_square_gof([510, 490], [0.5, 0.5]).p_value > 0.5
    assert stats.chi_square_gof([600, 400], [0.5, 0.5]).p_value < 1e-9


def test_chi_square_zero_probability_category():
    assert stats.chi_square_gof([0, 100], [0.0, 1.0]).p_value == 1.0
    assert stats.chi_square_gof([1, 99], [0.0, 1.0]).p_value == 0.0


def test_sample_sizes():
    n = stats.proportion_sample_size(0.5, 0.6, 0.001, 0.999)
    assert 900 < n < 1100
    assert stats.zero_events_sample_size(0.01, 0.001) == math.ceil(math.log(0.001) / math.log(0.99))
    with pytest.raises(ValueError):
        stats.proportion_sample_size(0.5, 0.5, 0.01, 0.9)


def test_truncated_geometric_matches_closed_form_mean():
    mean, variance = stats.truncated_geometric(0.7, 21)
    assert mean == pytest.approx((1 - 0.7**21) / 0.3)
    assert 0 < variance < 0.7 / 0.3**2
    assert stats.truncated_geometric(0.5, 1) == (1.0, 0.0)


def test_chi_square_with_nothing_observed_fits_nothing():
    # Every request failed: no count to test, and never a pass (nor a division by zero).
    assert stats.chi_square_gof([0, 0], [0.5, 0.5]).p_value == 0.0


def test_binomial_p_value_is_exact():
    # Ten fair coins, no head: both tails of 1/1024 together.
    assert math.isclose(stats.binomial_p_value(0, 10, 0.5), 2 / 1024)
    assert stats.binomial_p_value(5, 10, 0.5) == 1.0
    # Near 1: two failures in 231 at p = 1 - 0.7**21 happen in about 0.8% of runs, three in 0.03%.
    p = 1 - 0.7**21
    assert 0.006 < stats.binomial_p_value(229, 231, p) < 0.02
    assert stats.binomial_p_value(228, 231, p) < 0.001


def test_binomial_lower_tail_is_one_sided():
    # 100 of 100 at p = 0.9: far above, never a reason to reject; 78 of 100: below by 4 standard deviations.
    assert stats.binomial_lower_tail(100, 100, 0.9) == pytest.approx(1.0)
    assert stats.binomial_lower_tail(78, 100, 0.9) < 0.001 < stats.binomial_lower_tail(80, 100, 0.9)
    assert stats.binomial_lower_tail(0, 10, 0.5) == pytest.approx(0.5**10)
    assert stats.binomial_lower_tail(5, 0, 0.5) == 1.0
