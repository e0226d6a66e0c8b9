"""Fold-paired statistics and the rules that turn an interval into a verdict.

Two series indexed by fold are paired on the folds both have; with k pairs the difference
d = a − b has mean d̄, standard deviation sd (ddof = 1) and the 95 % t-interval d̄ ± t₀.₉₇₅,ₖ₋₁ ·
sd/√k (as ``scipy.stats.ttest_rel(...).confidence_interval()``). With k < 2 there is no interval
and every verdict resting on one is "inconclusive". The folds share training data, the teacher
and the IM copies, so the intervals are approximate: they ignore the dependence between folds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"

RULES = {
    "above": "the difference is greater than the threshold",
    "at_least": "the difference is at least the threshold",
    "below": "the difference is smaller than the threshold",
    "at_most": "the difference is at most the threshold",
    "within": "the difference lies within ± the threshold (equivalence)",
    "max_at_most": "the largest value of a over folds is at most the threshold",
}
"""Each verdict rule, in words: what the claim says of the paired difference a − b."""


def paired_stats(a: pd.Series, b: pd.Series | None = None) -> dict:
    """Mean difference a − b over the folds both have (indices are folds) and its 95 % t-interval.

    ``b=None`` compares ``a`` with 0. Returns mean_a, mean_b, max_a, mean_diff, sd_diff, ci_low,
    ci_high and n_folds; the interval is NaN with fewer than 2 pairs, everything with none.
    """
    a = a.dropna()
    if b is None:
        b = pd.Series(0.0, index=a.index)
    b = b.dropna()
    common = a.index.intersection(b.index).sort_values()
    a, b = a.loc[common].astype(float), b.loc[common].astype(float)
    d = (a - b).to_numpy()
    k = len(d)
    out = {
        "mean_a": a.mean() if k else math.nan,
        "mean_b": b.mean() if k else math.nan,
        "max_a": a.max() if k else math.nan,
        "mean_diff": float(d.mean()) if k else math.nan,
        "sd_diff": float(d.std(ddof=1)) if k > 1 else math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "n_folds": k,
    }
    if k > 1:
        half = stats.t.ppf(0.975, k - 1) * out["sd_diff"] / math.sqrt(k)
        out["ci_low"], out["ci_high"] = out["mean_diff"] - half, out["mean_diff"] + half
    return out


def decide(st: dict, threshold: float, rule: str) -> str:
    """The verdict of a comparison's statistics ``st`` under ``rule`` (see :data:`RULES`).

    ``max_at_most`` needs one fold (it is a property of each model); every other rule needs an
    interval (two or more paired folds) and a finite threshold.
    """
    if rule == "max_at_most":
        if st["n_folds"] == 0:
            return UNSURE
        return HOLDS if st["max_a"] <= threshold else FAILS
    lo, hi = st["ci_low"], st["ci_high"]
    if st["n_folds"] < 2 or not (np.isfinite(lo) and np.isfinite(hi)) or not np.isfinite(threshold):
        return UNSURE
    if rule == "above":
        return HOLDS if lo > threshold else FAILS if hi <= threshold else UNSURE
    if rule == "at_least":
        return HOLDS if lo >= threshold else FAILS if hi < threshold else UNSURE
    if rule == "below":
        return HOLDS if hi < threshold else FAILS if lo >= threshold else UNSURE
    if rule == "at_most":
        return HOLDS if hi <= threshold else FAILS if lo > threshold else UNSURE
    if rule == "within":
        m = abs(threshold)
        return HOLDS if -m < lo and hi < m else FAILS if hi <= -m or lo >= m else UNSURE
    raise ValueError(f"unknown verdict rule {rule!r}; known: {sorted(RULES)}")


def aggregate(verdicts, how: str = "every") -> str:
    """One verdict from several: ``every`` (a claim about every temperature or every part: fails
    if one fails, holds if all hold), ``some`` (holds if one holds, fails if all fail)."""
    verdicts = list(verdicts)
    if not verdicts:
        return UNSURE
    if how == "every":
        return FAILS if FAILS in verdicts else HOLDS if all(v == HOLDS for v in verdicts) else UNSURE
    if how == "some":
        return HOLDS if HOLDS in verdicts else FAILS if all(v == FAILS for v in verdicts) else UNSURE
    raise ValueError(f"unknown aggregation {how!r}")
