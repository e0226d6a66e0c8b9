"""The claims that ``findings`` tests, one object each: what it compares, the threshold, the
verdict rule and the sentence. A new claim is one more entry of :data:`CLAIMS`.

A claim rests on one or more :class:`Comparison` s. A comparison is a fold-paired difference
a − b of one metric between two series of a figure row (:class:`Series`: a trained model, or a
distillation into the row's student, optionally of one recipe and against one reference teacher),
either at every temperature, once (``per_temperature=False``), or at the temperature chosen by
:func:`best_temperature`. Its verdict comes from :func:`kdinv.analysis.stats.decide` with the
comparison's rule and threshold; a claim's verdict aggregates its comparisons' verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kdinv.analysis.stats import FAILS, HOLDS, UNSURE, aggregate

TEACHER_IM_MAX = 1e-4
RELATIVE_MARGIN = 0.10
ACCURACY_MARGIN = 0.01


# ------------------------------------------------------------------------------------------ series
@dataclass(frozen=True)
class Series:
    """One model's metric rows of a figure row, one per fold (and temperature).

    ``role``: ``t``, ``t'``, ``s``, ``s_aug`` (trained; ``s_aug`` on the row's symmetry), or a
    distillation into the row's student: ``s→s``, ``s_aug→s``, ``t→s``, ``t'→s'``.
    ``reference``: for a distillation, whose fidelity (``own`` teacher, or the row's ``t``).
    """

    role: str
    label: str
    reference: str = "own"


TRAINED = {"t": ("teacher", "plain"), "t'": ("teacher_prime", "plain"), "s": ("student", "plain"),
           "s_aug": ("student", "symmetry")}  # fmt: skip
DISTILLED = {"s→s": ("student", "plain"), "s_aug→s": ("student", "symmetry"),
             "t→s": ("teacher", "plain"), "t'→s'": ("teacher_prime", "plain")}  # fmt: skip


def select(table: pd.DataFrame, row: dict, series: Series) -> pd.DataFrame:
    """The rows of ``table`` (the collected metric table) that make up ``series`` in ``row``."""
    sym = row["symmetry"]
    df = table[(table["dataset"] == row["dataset"]) & (table["symmetry"] == sym)]
    if series.role in TRAINED:
        key, augment = TRAINED[series.role]
        augment = sym if augment == "symmetry" else augment
        return df[(df["kind"] == "train") & (df["model"] == row[key]) & (df["augment"] == augment)]
    key, augment = DISTILLED[series.role]
    augment = sym if augment == "symmetry" else augment
    teacher = row[key]
    reference = f"{teacher}/{augment}" if series.reference == "own" else f"{row[series.reference]}/plain"
    return df[
        (df["kind"] == "distill")
        & (df["model"] == row["student"])
        & (df["teacher"] == teacher)
        & (df["teacher_augment"] == augment)
        & (df["reference"] == reference)
    ]


def per_fold(frame: pd.DataFrame, metric: str, what: str) -> pd.Series:
    """``metric`` indexed by fold; a fold present twice means the selection is ambiguous."""
    if frame["fold"].duplicated().any():
        folds = sorted(frame.loc[frame["fold"].duplicated(), "fold"].unique().tolist())
        raise ValueError(f"{what}: folds {folds} appear more than once in the metric table")
    return frame.set_index("fold")[metric].astype(float)


def at(frame: pd.DataFrame, temperature: float) -> pd.DataFrame:
    return frame[np.isclose(frame["temperature"].astype(float), temperature)]


def best_temperature(frame: pd.DataFrame) -> float:
    """The temperature whose mean IM over all its folds is lowest (ties: the lowest T)."""
    if frame.empty:
        return math.nan
    means = frame.groupby("temperature")["im"].mean()
    return float(means.index[means.to_numpy() == means.min()].min())


# --------------------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Comparison:
    """A fold-paired difference a − b of ``metric`` (the ``comparison`` column names it).

    ``b=None`` compares a with 0. ``when``: ``per_temperature`` (at every temperature of the
    distillations), ``once`` (a trained model, no temperature) or ``best_temperature`` (at the
    temperature :func:`best_temperature` picks for ``a``). ``threshold(stats)`` is the number the
    interval is compared with under ``rule`` (see :data:`kdinv.analysis.stats.RULES`); ``rule``
    None shows the comparison without a verdict.
    """

    name: str
    metric: str
    a: Series
    b: Series | None
    rule: str | None
    threshold: Callable[[dict], float] = lambda st: 0.0
    when: str = "per_temperature"


@dataclass(frozen=True)
class Claim:
    """A claim of the paper (or beyond it) and how the numbers decide it.

    ``comparisons`` are the rows of the findings table this claim rests on; ``across`` how their
    verdicts combine into the claim's (``every``: a claim about every temperature; ``some``);
    ``sentence(items, row, verdict)`` says what the numbers show (``items``: the claim's rows of
    the findings table, sorted by temperature).
    """

    id: str
    title: str
    comparisons: tuple[Comparison, ...]
    sentence: Callable[[pd.DataFrame, dict, str], str]
    across: str = "every"

    def verdict(self, items: pd.DataFrame) -> str:
        if items.empty or (items["n_folds"] == 0).all():
            return UNSURE
        return aggregate(items["verdict"], self.across)


# ---------------------------------------------------------------------------------- the sentences
def fmt(x: float) -> str:
    """A number for the text: 3 significant digits, a true minus sign, 'n/a' for NaN."""
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.3g}".replace("-", "−")


def interval(r) -> str:
    if r["n_folds"] < 2:
        return f"{fmt(r['mean_diff'])} (k = {r['n_folds']}, no interval)"
    return f"{fmt(r['mean_diff'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"


def temps(frame: pd.DataFrame) -> str:
    return ", ".join(f"T={t:g}" for t in frame["temperature"])


def details(items: pd.DataFrame) -> str:
    return "; ".join(f"T={r['temperature']:g}: {interval(r)}" for _, r in items.iterrows())


def _few(items: pd.DataFrame) -> str:
    k_max = int(items["n_folds"].max()) if not items.empty else 0
    return " (fewer than 2 paired folds)" if k_max < 2 else ""


def _sentence_a(items, row, v):
    if items.empty or items.iloc[0]["n_folds"] == 0:
        return "There is no teacher in the metric table."
    r = items.iloc[0]
    rel = "≤" if v == HOLDS else ">"
    return (f"Teacher {row['teacher']}: IM mean {fmt(r['mean_a'])}, max {fmt(r['max_a'])} "
            f"over {r['n_folds']} fold(s), {rel} {fmt(r['threshold'])}, so the claim {v}.")


def _sentence_b(b, row, v):
    improvement = "; ".join(
        f"T={r['temperature']:g}: {fmt(-r['mean_diff'])} "
        + (f"[{fmt(-r['ci_high'])}, {fmt(-r['ci_low'])}]" if r["n_folds"] > 1 else "(no interval)")
        + f" vs margin {fmt(-r['threshold'])}"
        for _, r in b.iterrows()
    )
    if v == HOLDS:
        lead = ("KD does not transfer the invariance beyond self-distillation: at every temperature "
                "the 95 % interval of the improvement IM(s→s) − IM(t→s) stays below the margin of "
                f"{RELATIVE_MARGIN:.0%} of IM(s→s)")
    elif v == FAILS:
        lead = ("KD makes the student more invariant than self-distillation by more than "
                f"{RELATIVE_MARGIN:.0%} of IM(s→s) at {temps(b[b['verdict'] == FAILS])}, "
                "so the claim does not hold")
    else:
        lead = ("Inconclusive" + _few(b) + ": at " + temps(b[b["verdict"] != HOLDS])
                + " the 95 % interval of the improvement IM(s→s) − IM(t→s) straddles the margin "
                f"of {RELATIVE_MARGIN:.0%} of IM(s→s)") if not b.empty else "No distillation is in the table"
    return f"{lead} (improvement [95 % CI]: {improvement or 'none'})."


def _sentence_c(c, row, v):
    r = c.iloc[0] if not c.empty else None
    if r is None or r["n_folds"] == 0:
        return "The table lacks the augmented student or the t→s distillations."
    nums = (f"IM(s_aug) {fmt(r['mean_b'])} against IM(t→s) {fmt(r['mean_a'])} at the best "
            f"T={r['best_temperature']:g}; difference {interval(r)}")
    if v == HOLDS:
        return f"Augmentation gives the more invariant student, the interval excludes 0 ({nums})."
    if v == FAILS:
        return f"The best KD student is at least as invariant as the augmented one ({nums})."
    return f"Inconclusive{_few(c)}: the interval includes 0 ({nums})."


def _sentence_d(d, row, v):
    if v == HOLDS:
        lead = ("t→s agrees with t more than the control t'→s' does at every temperature, "
                "the intervals exclude 0")
    elif v == FAILS:
        lead = ("The control t'→s' agrees with t at least as much as t→s does at "
                f"{temps(d[d['verdict'] == FAILS])}, so the fidelity is not specific to the teacher")
    else:
        lead = (f"Inconclusive{_few(d)}: at {temps(d[d['verdict'] != HOLDS])} the interval of the "
                "agreement difference includes 0") if not d.empty else "No distillation is in the table"
    return f"{lead} (agreement(t→s) − agreement(t'→s' vs t) [95 % CI]: {details(d) or 'none'})."


def _sentence_e(e, row, v):
    better = e[(e["n_folds"] > 1) & (e["ci_low"] > 0)]
    worse = e[(e["n_folds"] > 1) & (e["ci_high"] < 0)]
    if v == HOLDS:
        lead = f"KD costs less than {ACCURACY_MARGIN * 100:g} percentage point of accuracy at every temperature"
    elif v == FAILS:
        lead = (f"KD lowers the accuracy by more than {ACCURACY_MARGIN * 100:g} percentage point at "
                f"{temps(e[e['verdict'] == FAILS])}")
    else:
        lead = (f"Inconclusive{_few(e)}: at {temps(e[e['verdict'] != HOLDS])} the interval reaches below "
                f"−{ACCURACY_MARGIN * 100:g} percentage point") if not e.empty else "No distillation is in the table"
    direction = []
    if not better.empty:
        direction.append(f"significantly better than s alone at {temps(better)}")
    if not worse.empty:
        direction.append(f"significantly worse at {temps(worse)}")
    if not direction and not e.empty:
        direction.append("no significant difference from s alone at any temperature")
    tail = f"; direction: {', '.join(direction)}" if direction else ""
    return f"{lead}{tail} (accuracy(t→s) − accuracy(s) [95 % CI]: {details(e) or 'none'})."


# ------------------------------------------------------------------------------------- the claims
T, S, S_AUG = Series("t", "IM(t)"), Series("s", "accuracy(s)"), Series("s_aug", "IM(s_aug)")

TEACHER_IM = Comparison("teacher_im", "im", T, None, "max_at_most",
                        threshold=lambda st: TEACHER_IM_MAX, when="once")
IM_KD_MINUS_SELF = Comparison("im_kd_minus_self", "im", Series("t→s", "IM(t→s)"),
                              Series("s→s", "IM(s→s)"), "at_least",
                              threshold=lambda st: -RELATIVE_MARGIN * st["mean_b"])
IM_KD_MINUS_AUG = Comparison("im_kd_minus_aug", "im", Series("t→s", "IM(t→s)"), S_AUG, None)
AGREEMENT_KD_MINUS_CONTROL = Comparison(
    "agreement_kd_minus_control", "agreement", Series("t→s", "agreement(t→s, vs t)"),
    Series("t'→s'", "agreement(t'→s', vs t)", reference="teacher"), "above")
ACCURACY_KD_MINUS_ALONE = Comparison("accuracy_kd_minus_alone", "accuracy", Series("t→s", "accuracy(t→s)"),
                                     S, "at_least", threshold=lambda st: -ACCURACY_MARGIN)
IM_KD_BEST_MINUS_AUG = Comparison("im_kd_best_minus_aug", "im", Series("t→s", "IM(t→s, best T)"), S_AUG,
                                  "above", when="best_temperature")

COMPARISONS: tuple[Comparison, ...] = (
    TEACHER_IM, IM_KD_MINUS_SELF, IM_KD_MINUS_AUG, AGREEMENT_KD_MINUS_CONTROL, ACCURACY_KD_MINUS_ALONE,
    IM_KD_BEST_MINUS_AUG,
)
"""Every comparison of a row, in the order of the findings table."""

CLAIMS: tuple[Claim, ...] = (
    Claim("a", "(a) the teacher is structurally invariant, IM ≤ 1e-4 (§3.2)", (TEACHER_IM,), _sentence_a),
    Claim("b", "(b) KD does not transfer the invariance beyond self-distillation (§4, Fig. 1 col. 4)",
          (IM_KD_MINUS_SELF,), _sentence_b),
    Claim("c", "(c) augmentation instils more invariance than the best KD student (§4)",
          (IM_KD_BEST_MINUS_AUG,), _sentence_c),
    Claim("d", "(d) the KD student is faithful to its own teacher beyond the t'→s' control (§3.4, §4)",
          (AGREEMENT_KD_MINUS_CONTROL,), _sentence_d),
    Claim("e", "(e) KD does not hurt the student's accuracy (§4: generalisation improves)",
          (ACCURACY_KD_MINUS_ALONE,), _sentence_e),
)

CLAIM_OF: dict[str, str | None] = {c.name: None for c in COMPARISONS}
CLAIM_OF.update({comp.name: claim.id for claim in CLAIMS for comp in claim.comparisons})
"""The claim each comparison decides (None: shown without a verdict)."""

__all__ = ["CLAIMS", "COMPARISONS", "CLAIM_OF", "Claim", "Comparison", "Series"]
