"""Statistics over seeds: mean, sample std, 95% t-interval, and paired t-tests between methods.

Every method of one (budget, seed) trains with the same labeled subset and seed, so two methods'
scores pair up seed by seed, and their difference is tested with a paired t-test (Student's t on the
per-seed differences, two-sided). With one seed there is no spread to estimate: intervals, std and
p-values are None, never a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t critical value: t such that P(|T_df| <= t) = confidence."""
    return float(sps.t.ppf(0.5 + confidence / 2, df))


def describe(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, float | int | None]:
    """mean, std (n - 1), n and the t-interval of the mean (ci_low, ci_high, half_width; None for n < 2)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"need a non-empty list of numbers, got shape {x.shape}")
    n, mean = len(x), float(x.mean())
    if n < 2:
        return {"mean": mean, "std": None, "n": 1, "ci_low": None, "ci_high": None, "half_width": None}
    std = float(x.std(ddof=1))
    half = t_quantile(n - 1, confidence) * std / math.sqrt(n)
    return {
        "mean": mean,
        "std": std,
        "n": n,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "half_width": half,
    }


def paired_test(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> dict[str, float | int | None]:
    """Paired t-test of a - b over seeds: mean difference, its t-interval, the two-sided p-value.

    When every difference is the same number the t statistic is undefined (zero spread): p is 1 when
    they are all zero (no evidence of a difference) and 0 otherwise (a constant, nonzero gap).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be two lists of one length, got {a.shape} and {b.shape}")
    diff = describe(a - b, confidence)
    n = int(diff["n"])
    if n < 2:
        p = None
    elif diff["std"] == 0.0:
        p = 1.0 if diff["mean"] == 0.0 else 0.0
    else:
        t = diff["mean"] / (diff["std"] / math.sqrt(n))
        p = float(2 * sps.t.sf(abs(t), n - 1))
    return {
        "mean_diff": diff["mean"],
        "n": n,
        "ci_low": diff["ci_low"],
        "ci_high": diff["ci_high"],
        "p_value": p,
    }
