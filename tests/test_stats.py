"""Intervals and paired tests over seeds against scipy and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from semisup.reporting.stats import describe, paired_test, t_quantile

A = [0.912, 0.925, 0.931]
B = [0.899, 0.913, 0.917]


def test_t_quantile_matches_tables():
    # Two-sided 95% critical values of Student's t from any table.
    assert t_quantile(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(9) == pytest.approx(2.2622, abs=1e-4)


def test_describe_against_numpy_and_scipy():
    d = describe(A)
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(np.mean(A))
    assert d["std"] == pytest.approx(np.std(A, ddof=1))
    low, high = sps.t.interval(0.95, df=2, loc=np.mean(A), scale=sps.sem(A))
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    # By hand: s = 0.009713..., half = 4.302653 * s / sqrt(3).
    s = math.sqrt(sum((x - 0.9226666667) ** 2 for x in A) / 2)
    assert d["half_width"] == pytest.approx(4.302653 * s / math.sqrt(3), rel=1e-5)


def test_one_seed_gives_no_interval():
    d = describe([0.93])
    assert d == {"mean": 0.93, "std": None, "n": 1, "ci_low": None, "ci_high": None, "half_width": None}
    p = paired_test([0.93], [0.91])
    assert p["mean_diff"] == pytest.approx(0.02)
    assert p["p_value"] is None and p["ci_low"] is None and p["ci_high"] is None


def test_paired_test_against_scipy():
    p = paired_test(A, B)
    ref = sps.ttest_rel(A, B)
    assert p["p_value"] == pytest.approx(ref.pvalue)
    assert p["mean_diff"] == pytest.approx(np.mean(np.subtract(A, B)))
    low, high = ref.confidence_interval(0.95)
    assert (p["ci_low"], p["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    # The unpaired test on the same numbers is far weaker: pairing is what makes the gap visible.
    assert p["p_value"] < 0.05 < sps.ttest_ind(A, B).pvalue


def test_paired_test_with_constant_differences():
    assert paired_test([0.9, 0.8], [0.9, 0.8])["p_value"] == 1.0
    assert paired_test([0.9, 0.8], [0.85, 0.75])["p_value"] == 0.0


def test_bad_input():
    with pytest.raises(ValueError):
        describe([])
    with pytest.raises(ValueError):
        paired_test([1.0, 2.0], [1.0])
