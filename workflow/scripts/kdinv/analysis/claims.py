"""The claims that ``findings`` tests, one object each: what it compares, the threshold, the
verdict rule and the sentence. A new claim is one more entry of :data:`CLAIMS`.

A claim rests on one or more :class:`Comparison` s. A comparison is a fold-paired difference
a − b of one metric between two series of a figure row (:class:`Series`: a trained model, or a
distillation into the row's student, optionally of one recipe and against one reference teacher),
either at every temperature, once (``per_temperature=False``), or at the temperature chosen by
:func:`best_temperature`. Its verdict comes from :func:`kdinv.analysis.stats.decide` with the
comparison's rule and threshold; a claim's verdict aggregates its comparisons' verdicts.

Where several tests decide a claim (several temperatures, or two comparisons as in (h)), the
direction in which one test alone decides is corrected with Holm's procedure over the claim's
tests (:meth:`Claim.decide`): for a claim about every temperature, "does not hold" (one failing
test suffices); for a claim about some temperature, "holds". The other direction needs every test
to agree, each at 5 %, which keeps the level without correction (an intersection-union test).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from kdinv.analysis.stats import ALPHA, FAILS, HOLDS, UNSURE, aggregate, decide, holm, p_values
from kdinv.distill.recipes import PAPER, RECIPES, param_column
from kdinv.symmetry.catalog import TEACHER_IM_MAX

RELATIVE_MARGIN = 0.10
ACCURACY_MARGIN = 0.01


# ------------------------------------------------------------------------------------------ series
@dataclass(frozen=True)
class Series:
    """One model's metric rows of a figure row, one per fold (and temperature).

    ``role``: ``t``, ``t'``, ``s``, ``s_aug`` (trained; ``s_aug`` on the row's symmetry), or a
    distillation into the row's student: ``s→s``, ``s_aug→s``, ``t→s``, ``t'→s'``.
    ``reference``: for a distillation, whose fidelity (``own`` teacher, or the row's ``t``).
    ``recipe``, ``direction``: for a distillation, the recipe (:mod:`kdinv.distill.recipes`) and
    KD direction; a recipe that uses a symmetry is taken with the row's. ``plain`` in the paper's
    direction is the paper's run. A recipe with several values of a parameter (consistency's λ)
    gives several variants; :func:`best_variant` picks one.
    """

    role: str
    label: str
    reference: str = "own"
    recipe: str = PAPER
    direction: str | None = None  # None: the paper's KD direction (that of the ``plain`` runs)
    variant: str | None = None  # one recipe variant by its id (the ``recipe`` column), if given


TRAINED = {"t": ("teacher", "plain"), "t'": ("teacher_prime", "plain"), "s": ("student", "plain"),
           "s_aug": ("student", "symmetry")}  # fmt: skip
DISTILLED = {"s→s": ("student", "plain"), "s_aug→s": ("student", "symmetry"),
             "t→s": ("teacher", "plain"), "t'→s'": ("teacher_prime", "plain")}  # fmt: skip


def paper_direction(table: pd.DataFrame) -> str | None:
    """The KD direction of the paper's runs (recipe ``plain``) in the table."""
    if "recipe" not in table or "kd_direction" not in table:
        return None
    plain = table.loc[table["recipe"] == PAPER, "kd_direction"].dropna()
    return plain.iloc[0] if not plain.empty else None


def _recipe_rows(df: pd.DataFrame, row: dict, series: Series, paper: str | None) -> pd.DataFrame:
    if series.variant is not None:
        return df[df["recipe"] == series.variant] if "recipe" in df else df.iloc[0:0]
    if "recipe" not in df:  # a table from before recipes: every distillation is the paper's
        return df if series.recipe == PAPER and series.direction in (None, paper) else df.iloc[0:0]
    direction = series.direction or paper
    if series.recipe == PAPER and direction == paper:
        return df[df["recipe"] == PAPER]
    sel = df[(df["recipe_name"] == series.recipe) & (df["kd_direction"] == direction)]
    if RECIPES[series.recipe].needs_symmetry:
        sel = sel[sel["recipe_symmetry"] == row["symmetry"]]
    return sel


def select(table: pd.DataFrame, row: dict, series: Series) -> pd.DataFrame:
    """The rows of ``table`` (the collected metric table) that make up ``series`` in ``row``."""
    sym = row["symmetry"]
    paper = paper_direction(table)
    df = table[(table["dataset"] == row["dataset"]) & (table["symmetry"] == sym)]
    if series.role in TRAINED:
        key, augment = TRAINED[series.role]
        augment = sym if augment == "symmetry" else augment
        return df[(df["kind"] == "train") & (df["model"] == row[key]) & (df["augment"] == augment)]
    key, augment = DISTILLED[series.role]
    augment = sym if augment == "symmetry" else augment
    teacher = row[key]
    reference = f"{teacher}/{augment}" if series.reference == "own" else f"{row[series.reference]}/plain"
    sel = df[
        (df["kind"] == "distill")
        & (df["model"] == row["student"])
        & (df["teacher"] == teacher)
        & (df["teacher_augment"] == augment)
        & (df["reference"] == reference)
    ]
    return _recipe_rows(sel, row, series, paper)


def per_fold(frame: pd.DataFrame, metric: str, what: str) -> pd.Series:
    """``metric`` indexed by fold; a fold present twice means the selection is ambiguous."""
    if frame["fold"].duplicated().any():
        folds = sorted(frame.loc[frame["fold"].duplicated(), "fold"].unique().tolist())
        raise ValueError(f"{what}: folds {folds} appear more than once in the metric table")
    return frame.set_index("fold")[metric].astype(float)


def at(frame: pd.DataFrame, temperature: float) -> pd.DataFrame:
    return frame[np.isclose(frame["temperature"].astype(float), temperature)]


def selection_metric(frame: pd.DataFrame) -> str:
    """What a "best" temperature or λ is chosen on: the IM on the fold's validation part
    (``val_im``), so that the test split that a claim then tests is not used to choose. A table
    without it is refused: choosing on the test split's ``im`` would test on what chose."""
    if "val_im" not in frame or (not frame.empty and frame["val_im"].isna().all()):
        raise ValueError(
            "the metric table has no column 'val_im' (IM on each fold's validation part) for the "
            "runs a best temperature or λ is chosen from; a best choice on the test split's 'im' "
            "would test on the data that chose, so it is refused: rerun the evaluations"
        )
    return "val_im"


def best_temperature(frame: pd.DataFrame) -> float:
    """The temperature whose mean validation IM over all its folds is lowest (ties: lowest T)."""
    if frame.empty:
        return math.nan
    means = frame.groupby("temperature")[selection_metric(frame)].mean()
    return float(means.index[means.to_numpy() == means.min()].min())


def best_variant(frame: pd.DataFrame, key: str) -> tuple[pd.DataFrame, float]:
    """Of several variants of one recipe at one temperature that differ in the parameter ``key``
    (a config key, e.g. consistency's ``lambda``), the one whose mean validation IM over its folds
    is lowest (ties: the smallest value); (its rows, its value)."""
    column = param_column(key)
    if frame.empty or column not in frame or frame[column].isna().all():
        return frame, math.nan
    means = frame.groupby(column)[selection_metric(frame)].mean()
    best = float(means.index[means.to_numpy() == means.min()].min())
    return frame[np.isclose(frame[column].astype(float), best)], best


def best_candidate(frames: list[tuple[Series, pd.DataFrame]]) -> tuple[Series, float, float, pd.DataFrame] | None:
    """Of several distillation series (recipes), the one whose mean validation IM over its folds is
    lowest at some temperature (and, for a recipe with several λ, its best λ: :func:`best_variant`):
    (series, temperature, λ or NaN, its rows at that temperature and λ). Ties: the earlier series,
    then the lowest T. None when every frame is empty."""
    best = None
    for series, frame in frames:
        for temperature in sorted(frame["temperature"].dropna().astype(float).unique()):
            at_t, params = at(frame, temperature), RECIPES[series.recipe].params
            rows, lam = best_variant(at_t, params[0].key) if params else (at_t, math.nan)
            score = rows[selection_metric(rows)].mean()
            if best is None or score < best[0]:
                best = (score, series, float(temperature), lam, rows)
    return None if best is None else best[1:]


# --------------------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Comparison:
    """A fold-paired difference a − b of ``metric`` (the ``comparison`` column names it).

    ``b=None`` compares a with 0. ``when``: ``per_temperature`` (at every temperature of the
    distillations), ``once`` (a trained model, no temperature), ``best_temperature`` (at the
    temperature :func:`best_temperature` picks for ``a``) or ``best_recipe`` (``a`` is the one of
    ``candidates``, at the temperature and λ, that :func:`best_candidate` picks).
    ``threshold(stats)`` is the number the interval is compared with under ``rule`` (see
    :data:`kdinv.analysis.stats.RULES`); ``rule`` None shows the comparison without a verdict.
    """

    name: str
    metric: str
    a: Series
    b: Series | None
    rule: str | None
    threshold: Callable[[dict], float] = lambda st: 0.0
    when: str = "per_temperature"
    choose: str | None = None  # "lambda": a's best variant at each temperature (best_variant)
    candidates: tuple[Series, ...] = ()  # when="best_recipe": the series a is chosen from


@dataclass(frozen=True)
class Claim:
    """A claim of the paper (or beyond it) and how the numbers decide it.

    ``comparisons`` are the rows of the findings table this claim rests on; ``across`` how their
    verdicts combine into the claim's (``every``: a claim about every temperature; ``some``),
    and which direction :meth:`decide` corrects for the number of tests;
    ``sentence(items, row, verdict)`` says what the numbers show (``items``: the claim's rows of
    the findings table, sorted by temperature).
    """

    id: str
    title: str
    comparisons: tuple[Comparison, ...]
    sentence: Callable[[pd.DataFrame, dict, str], str]
    across: str = "every"

    def decide(self, items: pd.DataFrame) -> list[str | None]:
        """The verdict of each of the claim's rows (comparisons × temperatures), corrected for
        their number: Holm's procedure over the p-values of the direction that one row alone
        decides (``every``: does not hold; ``some``: holds), the other direction at
        :data:`~kdinv.analysis.stats.ALPHA` each (see the module docstring)."""
        rows = [r for _, r in items.iterrows()]
        ps = [p_values(r, r["threshold"], r["rule"]) if r["rule"] not in (None, "max_at_most")
              and isinstance(r["rule"], str) else (math.nan, math.nan) for r in rows]
        union = 1 if self.across == "every" else 0  # the index of the p-value Holm corrects
        corrected = holm([p[union] for p in ps])
        out = []
        for r, p, c in zip(rows, ps, corrected):
            if not isinstance(r["rule"], str):
                out.append(None)
            elif r["rule"] == "max_at_most":
                out.append(decide(r, r["threshold"], r["rule"]))
            else:
                plain = [x < ALPHA if np.isfinite(x) else False for x in p]
                plain[union] = c
                out.append(decide(r, r["threshold"], r["rule"], holds_at=plain[0], fails_at=plain[1]))
        return out

    def verdict(self, items: pd.DataFrame) -> str:
        """The claim's verdict from its comparisons' rows; a comparison without a rule (shown for
        information, e.g. the accuracy change of (i)) has no verdict and does not take part."""
        decided = items[items["verdict"].notna()] if not items.empty else items
        if decided.empty or (decided["n_folds"] == 0).all():
            return UNSURE
        return aggregate(decided["verdict"], self.across)


# ---------------------------------------------------------------------------------- the sentences
def fmt(x: float) -> str:
    """A number for the text: 3 significant digits, a true minus sign, 'n/a' for NaN."""
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.3g}".replace("-", "−")


def interval(r, level: int = 95) -> str:
    if r["n_folds"] < 2:
        return f"{fmt(r['mean_diff'])} (k = {r['n_folds']}, no interval)"
    lo, hi = ("ci_low", "ci_high") if level == 95 else ("ci90_low", "ci90_high")
    return f"{fmt(r['mean_diff'])} [{fmt(r[lo])}, {fmt(r[hi])}]"


def temps(frame: pd.DataFrame) -> str:
    return ", ".join(f"T={t:g}" for t in frame["temperature"])


def details(items: pd.DataFrame) -> str:
    return "; ".join(f"T={r['temperature']:g}: {interval(r)}" for _, r in items.iterrows())


def _few(items: pd.DataFrame) -> str:
    """Where no test was made, and why (:func:`kdinv.analysis.stats.undecided`)."""
    if items.empty or "undecided" not in items:
        return ""
    parts = []
    for why, group in items[items["undecided"].notna()].groupby("undecided", sort=False):
        where = f" at {temps(group)}" if group["temperature"].notna().all() else ""
        parts.append(f"no test{where}: {why}")
    return f" ({'; '.join(parts)})" if parts else ""


def _unsure(items: pd.DataFrame, why: str) -> str:
    """The lead of an inconclusive sentence: where no test was made and why, then ``why`` unless
    no test was made at all."""
    none_tested = "undecided" in items and items["undecided"].notna().all()
    return f"Inconclusive{_few(items)}" + ("" if none_tested else f": {why}")


def _holm_paren(items: pd.DataFrame) -> str:
    h = _holm(items)
    return f" ({h[2:]})" if h else ""


def _holm(items: pd.DataFrame) -> str:
    tested = int(items["p_holds"].notna().sum()) if "p_holds" in items else 0
    return f", Holm-corrected over {tested} tests" if tested > 1 else ""


def _sentence_a(items, row, v):
    if items.empty or items.iloc[0]["n_folds"] == 0:
        return "There is no teacher in the metric table."
    r = items.iloc[0]
    rel = "≤" if v == HOLDS else ">"
    return (f"Teacher {row['teacher']}: IM mean {fmt(r['mean_a'])}, max {fmt(r['max_a'])} "
            f"over {r['n_folds']} fold(s), {rel} {fmt(r['threshold'])}, so the claim {v}.")


def _sentence_b(b, row, v):
    margin = f"±{RELATIVE_MARGIN:.0%} of IM(s→s)"
    nums = "; ".join(
        f"T={r['temperature']:g}: {interval(r, 90)} (95 %: {interval(r)}) vs ±{fmt(r['threshold'])}"
        for _, r in b.iterrows()
    )
    if v == HOLDS:
        lead = ("KD leaves the student as invariant as self-distillation does: at every temperature the "
                f"90 % interval of IM(t→s) − IM(s→s) lies within {margin} (two one-sided tests at 5 %)")
    elif v == FAILS:
        fails = b[b["verdict"] == FAILS]
        more = fails[fails["mean_diff"] < 0]
        less = fails[fails["mean_diff"] > 0]
        parts = ([f"more invariant than self-distillation at {temps(more)}"] if not more.empty else []) + (
            [f"less invariant than self-distillation at {temps(less)}"] if not less.empty else [])
        lead = (f"KD makes the student {' and '.join(parts)}, beyond {margin} (the 95 % interval beyond "
                f"the margin{_holm(b)}), so the claim does not hold")
    else:
        lead = _unsure(b, f"at {temps(b[b['verdict'] != HOLDS])} the 90 % interval of IM(t→s) − IM(s→s) "
                          f"reaches beyond {margin} and the 95 % one does not lie beyond it") \
            if not b.empty else "No distillation is in the table"
    return f"{lead} (IM(t→s) − IM(s→s) [90 % CI] vs margin: {nums or 'none'})."


def _per_t_sentence(what: str, holds: str, fails: str, level: int = 95):
    """A sentence for a claim about every temperature: ``holds`` / ``fails`` say what the numbers
    show; ``what`` names the difference; ``level`` the interval that decides (90 or 95 %)."""

    def sentence(items, row, v):
        if items.empty or (items["n_folds"] == 0).all():
            return "The run has no such distillations (switch the recipe on in the config)."
        if v == HOLDS:
            lead = f"{holds} at every temperature"
        elif v == FAILS:
            lead = f"{fails} at {temps(items[items['verdict'] == FAILS])}{_holm_paren(items)}"
        else:
            lead = _unsure(items, f"the test does not decide at {temps(items[items['verdict'] != HOLDS])}")
        shown = "; ".join(f"T={r['temperature']:g}: {interval(r, level)}" for _, r in items.iterrows())
        return f"{lead} ({what} [{level} % CI]: {shown})."

    return sentence


def _sentence_j(items, row, v):
    if items.empty or (items["n_folds"] == 0).all():
        return "The run has no reverse-KL distillations (switch the recipe on in the config)."
    margin = f"{ACCURACY_MARGIN * 100:g} percentage point"
    lower = items[items["verdict"] == HOLDS]
    test = f"two-sided paired t-tests at 5 %{_holm(items)}"
    if v == HOLDS:
        lead = f"Reverse KL is less accurate than forward KL at {temps(lower)} ({test})"
        rest = items[items["verdict"] != HOLDS]
        if not rest.empty:
            lead += f"; not significantly so at {temps(rest)}"
    elif v == FAILS:
        lead = (f"Reverse KL costs less than {margin} of accuracy at every temperature (the 95 % "
                f"interval lies above −{margin}) and is significantly less accurate at none ({test})")
    else:
        lead = _unsure(items, f"reverse KL is significantly less accurate at no temperature ({test}), and "
                              f"at {temps(items[items['verdict'] != FAILS])} the interval does not exclude "
                              f"a loss of {margin}")
    return f"{lead} (accuracy(reverse KL) − accuracy(forward KL) [95 % CI]: {details(items)})."


def _sentence_c(c, row, v):
    r = c.iloc[0] if not c.empty else None
    if r is None or r["n_folds"] == 0:
        return "The table lacks the augmented student or the t→s distillations."
    nums = (f"IM(s_aug) {fmt(r['mean_b'])} against IM(t→s) {fmt(r['mean_a'])} at the best "
            f"T={r['best_temperature']:g} (best T on validation IM); difference {interval(r)}")
    if v == HOLDS:
        return f"Augmentation gives the more invariant student, the interval excludes 0 ({nums})."
    if v == FAILS:
        return f"The best KD student is more invariant than the augmented one, the interval excludes 0 ({nums})."
    return _unsure(c, "the interval includes 0") + f" ({nums})."


def _sentence_k(k, row, v):
    r = k.iloc[0] if not k.empty else None
    if r is None or r["n_folds"] == 0:
        return "The table lacks the augmented student or the recipes' t→s distillations."
    lam = f", λ={fmt(r['best_lambda'])}" if np.isfinite(r["best_lambda"]) else ""
    nums = (f"IM(s_aug) {fmt(r['mean_b'])} against {r['a']} {fmt(r['mean_a'])}, the t→s student of "
            f"lowest validation IM over the recipes, temperatures and λ (T={r['best_temperature']:g}{lam}); "
            f"difference {interval(r)}")
    if v == HOLDS:
        return f"Augmentation gives a more invariant student than the best KD recipe, the interval excludes 0 ({nums})."
    if v == FAILS:
        return f"The best KD recipe gives a more invariant student than augmentation, the interval excludes 0 ({nums})."
    return _unsure(k, "the interval includes 0") + f" ({nums})."


def _sentence_d(d, row, v):
    if v == HOLDS:
        lead = ("t→s agrees with t more than the control t'→s' does at every temperature, "
                "the intervals exclude 0")
    elif v == FAILS:
        lead = ("The control t'→s' agrees with t more than t→s does at "
                f"{temps(d[d['verdict'] == FAILS])}{_holm_paren(d)}, so the fidelity is not specific to the teacher")
    else:
        lead = _unsure(d, f"at {temps(d[d['verdict'] != HOLDS])} the interval of the agreement difference "
                          "includes 0") if not d.empty else "No distillation is in the table"
    return f"{lead} (agreement(t→s) − agreement(t'→s' vs t) [95 % CI]: {details(d) or 'none'})."


def _sentence_e(e, row, v):
    tested = e[e["undecided"].isna()] if "undecided" in e else e.iloc[0:0]
    better = tested[tested["ci_low"] > 0]
    worse = tested[tested["ci_high"] < 0]
    if v == HOLDS:
        lead = f"KD costs less than {ACCURACY_MARGIN * 100:g} percentage point of accuracy at every temperature"
    elif v == FAILS:
        lead = (f"KD lowers the accuracy by more than {ACCURACY_MARGIN * 100:g} percentage point at "
                f"{temps(e[e['verdict'] == FAILS])}{_holm_paren(e)}")
    else:
        lead = (
            _unsure(
                e,
                f"at {temps(e[e['verdict'] != HOLDS])} the interval reaches below "
                f"−{ACCURACY_MARGIN * 100:g} percentage point",
            )
            if not e.empty
            else "No distillation is in the table"
        )
    direction = []
    if not better.empty:
        direction.append(f"significantly better than s alone at {temps(better)}")
    if not worse.empty:
        direction.append(f"significantly worse at {temps(worse)}")
    if not direction and not tested.empty:
        direction.append("no significant difference from s alone at any temperature tested")
    tail = f"; direction: {', '.join(direction)}" if direction else ""
    return f"{lead}{tail} (accuracy(t→s) − accuracy(s) [95 % CI]: {details(e) or 'none'})."


def _sentence_i(items, v):
    im = items[items["comparison"] == "im_consistency_minus_plain"]
    acc = items[items["comparison"] == "accuracy_consistency_minus_plain"]
    if im.empty or (im["n_folds"] == 0).all():
        return "The run has no consistency recipe (switch it on in the config)."
    lam = "; ".join(f"T={r['temperature']:g}: λ={fmt(r['best_lambda'])}" for _, r in im.iterrows())
    if v == HOLDS:
        lead = "The penalty makes t→s more invariant than plain KD at every temperature"
    elif v == FAILS:
        lead = (f"The penalty leaves t→s less invariant than plain KD at {temps(im[im['verdict'] == FAILS])}"
                f"{_holm_paren(im)}")
    else:
        lead = _unsure(im, f"the interval does not decide at {temps(im[im['verdict'] != HOLDS])}")
    return (f"{lead} (IM difference [95 % CI]: {details(im)}; best λ on validation IM: {lam}; "
            f"the accuracy changes by {details(acc) or 'n/a'})." )


# ------------------------------------------------------------------------------------- the claims
T, S, S_AUG = Series("t", "IM(t)"), Series("s", "accuracy(s)"), Series("s_aug", "IM(s_aug)")

TEACHER_IM = Comparison("teacher_im", "im", T, None, "max_at_most",
                        threshold=lambda st: TEACHER_IM_MAX, when="once")
IM_KD_MINUS_SELF = Comparison("im_kd_minus_self", "im", Series("t→s", "IM(t→s)"),
                              Series("s→s", "IM(s→s)"), "within",
                              threshold=lambda st: RELATIVE_MARGIN * st["mean_b"])
IM_KD_MINUS_AUG = Comparison("im_kd_minus_aug", "im", Series("t→s", "IM(t→s)"), S_AUG, None)
AGREEMENT_KD_MINUS_CONTROL = Comparison(
    "agreement_kd_minus_control", "agreement", Series("t→s", "agreement(t→s, vs t)"),
    Series("t'→s'", "agreement(t'→s', vs t)", reference="teacher"), "above")
ACCURACY_KD_MINUS_ALONE = Comparison("accuracy_kd_minus_alone", "accuracy", Series("t→s", "accuracy(t→s)"),
                                     S, "at_least", threshold=lambda st: -ACCURACY_MARGIN)
IM_KD_BEST_MINUS_AUG = Comparison("im_kd_best_minus_aug", "im", Series("t→s", "IM(t→s, best T)"), S_AUG,
                                  "above", when="best_temperature")

# Beyond the paper (docs/beyond.md): the distillation recipes.
KD_AUG = "t→s, augmented"
IM_AUGKD_MINUS_AUG = Comparison(
    "im_augmented_kd_minus_aug", "im", Series("t→s", f"IM({KD_AUG})", recipe="augmented"), S_AUG, "not_above",
    threshold=lambda st: RELATIVE_MARGIN * st["mean_b"])
ACCURACY_AUGKD_MINUS_AUG = Comparison(
    "accuracy_augmented_kd_minus_aug", "accuracy", Series("t→s", f"accuracy({KD_AUG})", recipe="augmented"),
    Series("s_aug", "accuracy(s_aug)"), "above")
IM_AUGKD_MINUS_AUGSELF = Comparison(
    "im_augmented_kd_minus_self", "im", Series("t→s", f"IM({KD_AUG})", recipe="augmented"),
    Series("s→s", "IM(s→s, augmented)", recipe="augmented"), "below")
AGREEMENT_AUGKD_MINUS_CONTROL = Comparison(
    "agreement_augmented_kd_minus_control", "agreement",
    Series("t→s", f"agreement({KD_AUG}, vs t)", recipe="augmented"),
    Series("t'→s'", "agreement(t'→s', augmented, vs t)", reference="teacher", recipe="augmented"), "above")
IM_CONSISTENCY_MINUS_PLAIN = Comparison(
    "im_consistency_minus_plain", "im", Series("t→s", "IM(t→s, consistency, best λ)", recipe="consistency"),
    Series("t→s", "IM(t→s)"), "below", choose="lambda")
ACCURACY_CONSISTENCY_MINUS_PLAIN = Comparison(
    "accuracy_consistency_minus_plain", "accuracy",
    Series("t→s", "accuracy(t→s, consistency, best λ)", recipe="consistency"), Series("t→s", "accuracy(t→s)"),
    None, choose="lambda")
ACCURACY_REVERSE_MINUS_FORWARD = Comparison(
    "accuracy_reverse_minus_forward", "accuracy", Series("t→s", "accuracy(t→s, reverse KL)", direction="reverse"),
    Series("t→s", "accuracy(t→s, forward KL)", direction="forward"), "lowers",
    threshold=lambda st: ACCURACY_MARGIN)

# Beyond the paper: continuous groups. The KD students of every recipe that ran, the best chosen on
# validation IM, against augmentation
# (docs/beyond.md, "Claim (k): does augmentation still win for a continuous group?").
KD_RECIPES = (Series("t→s", "IM(t→s, plain)"), Series("t→s", "IM(t→s, augmented)", recipe="augmented"),
              Series("t→s", "IM(t→s, consistency)", recipe="consistency"))
IM_KD_BEST_RECIPE_MINUS_AUG = Comparison(
    "im_kd_best_recipe_minus_aug", "im", Series("t→s", "IM(t→s, best recipe)"), S_AUG, "above",
    when="best_recipe", candidates=KD_RECIPES)

COMPARISONS: tuple[Comparison, ...] = (
    TEACHER_IM, IM_KD_MINUS_SELF, IM_KD_MINUS_AUG, AGREEMENT_KD_MINUS_CONTROL, ACCURACY_KD_MINUS_ALONE,
    IM_AUGKD_MINUS_AUG, ACCURACY_AUGKD_MINUS_AUG, IM_AUGKD_MINUS_AUGSELF, AGREEMENT_AUGKD_MINUS_CONTROL,
    IM_CONSISTENCY_MINUS_PLAIN, ACCURACY_CONSISTENCY_MINUS_PLAIN, ACCURACY_REVERSE_MINUS_FORWARD,
    IM_KD_BEST_MINUS_AUG, IM_KD_BEST_RECIPE_MINUS_AUG,
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
    Claim("f", "(f) KD on transformed inputs is at least as invariant as augmentation alone",
          (IM_AUGKD_MINUS_AUG,),
          _per_t_sentence("IM(t→s, augmented) − IM(s_aug), margin +10 % of IM(s_aug), one-sided 5 %",
                          "Distilling on transformed inputs reaches the augmented student's invariance "
                          "(the 90 % interval lies below the margin)",
                          "The augmented-recipe student is less invariant than augmentation alone, "
                          "beyond the margin", level=90)),
    Claim("g", "(g) KD on transformed inputs is more accurate than augmentation alone",
          (ACCURACY_AUGKD_MINUS_AUG,),
          _per_t_sentence("accuracy(t→s, augmented) − accuracy(s_aug)",
                          "The augmented-recipe student is more accurate than the augmented student",
                          "The augmented-recipe student is not more accurate than the augmented student")),
    Claim("h", "(h) the teacher matters under the augmented recipe (IM below self-distillation's, "
          "agreement above the t'→s' control)",
          (IM_AUGKD_MINUS_AUGSELF, AGREEMENT_AUGKD_MINUS_CONTROL),
          _per_t_sentence("IM(t→s) − IM(s→s) and agreement(t→s) − agreement(t'→s' vs t), augmented recipe",
                          "The invariant teacher gives a more invariant and more faithful student than "
                          "self-distillation and the t'→s' control",
                          "The invariant teacher does no better than self-distillation or the control")),
    Claim("i", "(i) the invariance penalty transfers invariance (consistency at its best λ vs plain KD)",
          (IM_CONSISTENCY_MINUS_PLAIN, ACCURACY_CONSISTENCY_MINUS_PLAIN), lambda items, row, v: _sentence_i(items, v)),
    Claim("j", "(j) reverse KL lowers the student's accuracy against forward KL at some temperature",
          (ACCURACY_REVERSE_MINUS_FORWARD,), _sentence_j, across="some"),
    Claim("k", "(k) augmentation instils more invariance than the best KD recipe (the question for a "
          "continuous group, whose orbit augmentation cannot cover)",
          (IM_KD_BEST_RECIPE_MINUS_AUG,), _sentence_k),
)

PAPER_CLAIMS = ("a", "b", "c", "d", "e")

MEASURE_CHECKED = ("b", "c")
"""The claims about invariance that are decided again under the other measures of invariance
(docs/method.md, "Invariance measured three ways"): the same comparisons and rules with IM
replaced by the orbit gap and by the Lie derivative, where the row has them."""


def measure_columns(table: pd.DataFrame, row: dict) -> list[tuple[str, str]]:
    """The measures of invariance of a row as (column, name): IM; the orbit gap of the largest
    finite group its data admits (none for sets); the Lie derivative (none for a symmetry without a
    continuous generator)."""
    from kdinv.symmetry.catalog import TRANSFORM_INFO

    out = [("im", "IM")]
    data = table[table["dataset"] == row["dataset"]]
    gaps = sorted((c[len("orbit_gap_"):] for c in table.columns
                   if c.startswith("orbit_gap_") and not c.endswith("_random") and data[c].notna().any()),
                  key=lambda g: (-(TRANSFORM_INFO[g].group_order or 0), g))
    if gaps:
        out.append((f"orbit_gap_{gaps[0]}", f"orbit gap ({gaps[0]})"))
    if "lie" in table and data[data["symmetry"] == row["symmetry"]]["lie"].notna().any():
        out.append(("lie", "Lie derivative"))
    return out


def under_measure(claim: Claim, metric: str) -> Claim:
    """``claim`` with IM replaced by ``metric`` in its comparisons (ids and names ``…@<metric>``)."""
    comps = tuple(replace(c, name=f"{c.name}@{metric}", metric=metric) for c in claim.comparisons)
    return replace(claim, id=f"{claim.id}@{metric}", comparisons=comps)
"""The paper's claims, reported for every run; the others only where their recipe ran."""

CLAIM_OF: dict[str, str | None] = {c.name: None for c in COMPARISONS}
CLAIM_OF.update({comp.name: claim.id for claim in CLAIMS for comp in claim.comparisons})
"""The claim each comparison decides (None: shown without a verdict)."""

__all__ = ["CLAIMS", "CLAIM_OF", "COMPARISONS", "Claim", "Comparison", "Series", "best_candidate"]
