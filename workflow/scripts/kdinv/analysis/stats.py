"""Fold-paired statistics, the tests that turn them into a verdict, and Holm's correction.

Two series indexed by fold are paired on the folds both have; with k pairs the difference
d = a − b has mean d̄, standard deviation sd (ddof = 1), standard error se = sd/√k and the 95 %
t-interval d̄ ± t₀.₉₇₅,ₖ₋₁ · se (as ``scipy.stats.ttest_rel(...).confidence_interval()``); the
90 % interval is shown for the equivalence and non-inferiority rules, whose tests it decides.

A verdict rests on two p-values of one-sample t-tests of d (df = k − 1; :func:`p_values`): that
of the test whose rejection shows the claim (``p_holds``) and that of the test whose rejection
shows its opposite (``p_fails``). Each is compared with the level :data:`ALPHA` (5 %), after
Holm's correction where several tests decide one verdict (:func:`holm`). No test is made, and
the verdict is "inconclusive", with fewer than :data:`MIN_FOLDS` paired folds or with sd = 0 (the
folds' differences are identical, as accuracy differences, multiples of 1/N, can be at small k:
a zero-width interval is no evidence of anything): :func:`undecided` says which.

The folds share training data, the teacher and the IM copies, so the tests are approximate:
they treat the folds as independent.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"

ALPHA = 0.05
"""The level of every test (per verdict, after Holm's correction where it applies)."""
MIN_FOLDS = 3
"""The fewest paired folds a test is made on: with 2, the t-interval is 12.7 standard errors wide
on each side and its standard deviation rests on one degree of freedom."""

RULES = {
    "above": "the difference is greater than the threshold (two-sided 5 %: the 95 % interval)",
    "at_least": "the difference is at least the threshold (two-sided 5 %: the 95 % interval)",
    "below": "the difference is smaller than the threshold (two-sided 5 %: the 95 % interval)",
    "at_most": "the difference is at most the threshold (two-sided 5 %: the 95 % interval)",
    "within": "the difference lies within ± the margin (equivalence, two one-sided tests at 5 %: "
              "the 90 % interval; beyond it: the 95 % interval beyond one side)",
    "not_above": "the difference is not above the margin (non-inferiority, one-sided 5 % each way: "
                 "the 90 % interval)",
    "lowers": "the difference is below 0 (two-sided 5 %); its opposite: above −margin (the 95 % "
              "interval, a loss smaller than the margin)",
    "max_at_most": "the largest value of a over folds is at most the threshold",
}
"""Each verdict rule, in words: what the claim says of the paired difference a − b."""


def paired_stats(a: pd.Series, b: pd.Series | None = None) -> dict:
    """Mean difference a − b over the folds both have (indices are folds) and its 95 % t-interval.

    ``b=None`` compares ``a`` with 0. Returns mean_a, mean_b, max_a, mean_diff, sd_diff, ci_low,
    ci_high (95 %), ci90_low, ci90_high and n_folds; the intervals are NaN with fewer than 2
    pairs, everything with none.
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
        "ci90_low": math.nan,
        "ci90_high": math.nan,
        "n_folds": k,
    }
    if k > 1:
        for name, q in (("ci", 0.975), ("ci90", 0.95)):
            half = stats.t.ppf(q, k - 1) * out["sd_diff"] / math.sqrt(k)
            out[f"{name}_low"], out[f"{name}_high"] = out["mean_diff"] - half, out["mean_diff"] + half
    return out


def undecided(st: dict) -> str | None:
    """Why no test can be made on ``st`` (None when one can)."""
    k = st["n_folds"]
    if k < MIN_FOLDS:
        return f"fewer than {MIN_FOLDS} paired folds (k = {k})"
    if not st["sd_diff"] > 0:
        return (f"the {k} folds' differences are identical (sd = 0), so their spread is unknown "
                "and the interval's zero width means nothing")
    return None


def p_values(st: dict, threshold: float, rule: str) -> tuple[float, float]:
    """(p_holds, p_fails) of ``rule`` at ``threshold`` (see :data:`RULES`), each to be compared
    with :data:`ALPHA`; (NaN, NaN) where :func:`undecided` finds no test or the threshold is not
    finite.

    With t(θ) = (d̄ − θ)/se on k − 1 degrees of freedom, p_>(θ) = P(T ≥ t(θ)) is the p-value of
    H0: μ ≤ θ against μ > θ and p_<(θ) = P(T ≤ t(θ)) that of H0: μ ≥ θ:

    - ``above``/``at_least``: (2·p_>(θ), 2·p_<(θ)); ``below``/``at_most``: (2·p_<(θ), 2·p_>(θ)).
      Doubled: the one-sided p-value of a two-sided test at 5 %, decided as the 95 % interval is;
    - ``within`` (± m, equivalence by two one-sided tests): (max(p_>(−m), p_<(m)),
      2·min(p_<(−m), p_>(m))): holds when the 90 % interval lies inside (−m, m), does not hold
      when the 95 % interval lies beyond one margin;
    - ``not_above`` (non-inferiority at the margin θ): (p_<(θ), p_>(θ)): the 90 % interval below
      θ, or above it;
    - ``lowers`` (threshold = the margin m > 0): (2·p_<(0), 2·p_>(−m)): significantly below 0 in a
      two-sided test, or the 95 % interval above −m (no loss as large as the margin).
    """
    if undecided(st) is not None or not np.isfinite(threshold):
        return math.nan, math.nan
    k, se = st["n_folds"], st["sd_diff"] / math.sqrt(st["n_folds"])

    def greater(theta):  # H0: μ ≤ θ
        return float(stats.t.sf((st["mean_diff"] - theta) / se, k - 1))

    def less(theta):  # H0: μ ≥ θ
        return float(stats.t.cdf((st["mean_diff"] - theta) / se, k - 1))

    if rule in ("above", "at_least"):
        return min(1.0, 2 * greater(threshold)), min(1.0, 2 * less(threshold))
    if rule in ("below", "at_most"):
        return min(1.0, 2 * less(threshold)), min(1.0, 2 * greater(threshold))
    if rule == "within":
        m = abs(threshold)
        return max(greater(-m), less(m)), min(1.0, 2 * min(less(-m), greater(m)))
    if rule == "not_above":
        return less(threshold), greater(threshold)
    if rule == "lowers":
        m = abs(threshold)
        return min(1.0, 2 * less(0.0)), min(1.0, 2 * greater(-m))
    raise ValueError(f"unknown verdict rule {rule!r}; known: {sorted(RULES)}")


def holm(p: list[float], alpha: float = ALPHA) -> list[bool]:
    """Which of the p-values Holm's step-down procedure rejects at family-wise level ``alpha``
    (NaN: no test, never rejected, not counted): sorted ascending, the i-th smallest (from 0) is
    compared with alpha / (m − i), stopping at the first that is not below it."""
    p = [float(x) for x in p]
    tested = sorted((x, i) for i, x in enumerate(p) if np.isfinite(x))
    m, out = len(tested), [False] * len(p)
    for rank, (x, i) in enumerate(tested):
        if not x < alpha / (m - rank):
            break
        out[i] = True
    return out


def decide(st: dict, threshold: float, rule: str, holds_at: bool | None = None,
           fails_at: bool | None = None) -> str:
    """The verdict of a comparison's statistics ``st`` under ``rule`` (see :data:`RULES`).

    ``max_at_most`` needs one fold (it is a property of each model). Every other rule decides
    from :func:`p_values` at :data:`ALPHA`, or from ``holds_at`` / ``fails_at`` where given (the
    decisions of a correction over several tests, :func:`holm`); it is "inconclusive" where
    :func:`undecided` finds no test.
    """
    if rule == "max_at_most":
        if st["n_folds"] == 0:
            return UNSURE
        return HOLDS if st["max_a"] <= threshold else FAILS
    p_holds, p_fails = p_values(st, threshold, rule)
    if not (np.isfinite(p_holds) and np.isfinite(p_fails)):
        return UNSURE
    holds = p_holds < ALPHA if holds_at is None else holds_at
    fails = p_fails < ALPHA if fails_at is None else fails_at
    return HOLDS if holds else FAILS if fails else UNSURE


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
