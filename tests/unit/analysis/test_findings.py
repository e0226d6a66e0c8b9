"""kdinv.analysis.findings: fold-paired statistics and the verdicts on the paper's claims."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kdinv.analysis.findings import (
    FAILS,
    HOLDS,
    UNSURE,
    findings_table,
    paired_stats,
    to_markdown,
    verdicts,
    write_findings,
)

ROW = {
    "name": "toy-row", "dataset": "toyset", "symmetry": "shift",
    "teacher": "big", "teacher_prime": "big-prime", "student": "small",
}
TEMPS = (1.0, 4.0)
DEFAULTS = {
    # role: (im, agreement, accuracy); agreement only for distilled runs.
    "t": (1e-8, None, 0.95),
    "tp": (1e-8, None, 0.90),
    "s": (0.50, None, 0.85),
    "s_aug": (0.10, None, 0.84),
    "self": (0.50, 0.90, 0.85),
    "aug_self": (0.20, 0.85, 0.84),
    "kd": (0.48, 0.92, 0.87),
    "ctrl": (0.49, 0.80, 0.86),  # t'→s' measured against t
}


def value(spec, temperature):
    return spec.get(temperature) if isinstance(spec, dict) else spec


def synthetic(row=ROW, k=3, temps=TEMPS, noise=0.002, seed=0, **roles) -> pd.DataFrame:
    """A metric table with the real columns for one figure row: k folds, the given temperatures.

    ``roles`` overrides DEFAULTS: role=(im, agreement, accuracy), each a number or {T: number};
    small Gaussian fold noise (sd ``noise``, IM of t/t' untouched) is added, values clipped.
    """
    spec = {**DEFAULTS, **roles}
    rng = np.random.default_rng(seed)
    d, sym = row["dataset"], row["symmetry"]
    t, tp, s = row["teacher"], row["teacher_prime"], row["student"]
    records = []

    def noisy(x, exact=False):
        if x is None:
            return math.nan
        return float(np.clip(x + (0.0 if exact else rng.normal(0, noise)), 0.0, 1.0))

    def metric_row(kind, model, augment, fold, im, agreement, accuracy, **extra):
        return {
            "dataset": d, "fold": fold, "kind": kind, "model": model, "augment": augment,
            "symmetry": sym, "reference": extra.pop("reference", None),
            "accuracy": accuracy, "nll": 0.5, "ece": 0.05, "n_test": 100, "im": im, "val_im": im,
            "agreement": agreement, "kl": math.nan if kind == "train" else 0.1,
            "teacher": extra.get("teacher"), "teacher_augment": extra.get("teacher_augment"),
            "temperature": extra.get("temperature", math.nan),
        }

    for fold in range(k):
        for role, model, augment in (("t", t, "plain"), ("tp", tp, "plain"), ("s", s, "plain"),
                                     ("s_aug", s, sym)):
            im, _, acc = spec[role]
            records.append(metric_row("train", model, augment, fold, noisy(im, role in ("t", "tp")),
                                      math.nan, noisy(acc)))
        for temp in temps:
            for role, teacher, taug, ref in (
                ("self", s, "plain", f"{s}/plain"),
                ("aug_self", s, sym, f"{s}/{sym}"),
                ("kd", t, "plain", f"{t}/plain"),
                ("ctrl", tp, "plain", f"{t}/plain"),
                ("ctrl", tp, "plain", f"{tp}/plain"),  # its own fidelity, not used by the claims
            ):
                im, agr, acc = (value(x, temp) for x in spec[role])
                records.append(metric_row(
                    "distill", s, "plain", fold, noisy(im), noisy(agr), noisy(acc),
                    reference=ref, teacher=teacher, teacher_augment=taug, temperature=temp,
                ))
    return pd.DataFrame.from_records(records)


def verdict_of(table, claim: str, row=ROW) -> str:
    found = findings_table(table, [row])
    for text, verdict, _ in verdicts(found, [row])[row["name"]]:
        if text.startswith(f"({claim})"):
            return verdict
    raise AssertionError(f"no claim ({claim})")


def pick(found, comparison, temperature=None) -> pd.Series:
    sel = found[found["comparison"] == comparison]
    if temperature is not None:
        sel = sel[sel["temperature"] == temperature]
    assert len(sel) == 1
    return sel.iloc[0]


# ------------------------------------------------------------------------------------ statistics
def test_intervals_match_scipy():
    table = synthetic(noise=0.02, seed=3)
    found = findings_table(table, [ROW])
    r = pick(found, "im_kd_minus_self", 4.0)
    sel = table[(table["kind"] == "distill") & (table["temperature"] == 4.0)]
    kd = sel[(sel["teacher"] == "big") & (sel["reference"] == "big/plain")].set_index("fold")["im"]
    self_ = sel[(sel["teacher"] == "small") & (sel["teacher_augment"] == "plain")].set_index("fold")["im"]
    diffs = (kd - self_).to_numpy()
    lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    ci = stats.ttest_rel(kd.to_numpy(), self_.to_numpy()).confidence_interval(0.95)
    assert r["n_folds"] == 3
    assert r["mean_diff"] == pytest.approx(diffs.mean(), rel=1e-12)
    assert r["ci_low"] == pytest.approx(lo, rel=1e-9) and r["ci_high"] == pytest.approx(hi, rel=1e-9)
    assert r["ci_low"] == pytest.approx(ci.low, rel=1e-9) and r["ci_high"] == pytest.approx(ci.high, rel=1e-9)
    assert r["sd_diff"] == pytest.approx(np.std(diffs, ddof=1))
    assert r["mean_b"] == pytest.approx(self_.mean())

    acc = pick(found, "accuracy_kd_minus_alone", 1.0)
    s = table[(table["kind"] == "train") & (table["model"] == "small") & (table["augment"] == "plain")]
    kd1 = table[(table["temperature"] == 1.0) & (table["reference"] == "big/plain")
                & (table["teacher"] == "big")]
    d = kd1.set_index("fold")["accuracy"] - s.set_index("fold")["accuracy"]
    res = stats.ttest_rel(kd1.set_index("fold")["accuracy"], s.set_index("fold")["accuracy"])
    assert acc["mean_diff"] == pytest.approx(d.mean())
    assert acc["ci_low"] == pytest.approx(res.confidence_interval().low)


def test_paired_stats_pairs_on_common_folds_only():
    a = pd.Series([1.0, 2.0, 4.0, 8.0], index=[0, 1, 2, 3])
    b = pd.Series([0.5, 1.0, 3.0], index=[1, 2, 5])
    st = paired_stats(a, b)
    assert st["n_folds"] == 2
    assert st["mean_diff"] == pytest.approx(((2.0 - 0.5) + (4.0 - 1.0)) / 2)
    one = paired_stats(a, pd.Series([1.0], index=[3]))
    assert one["n_folds"] == 1 and one["mean_diff"] == 7.0 and math.isnan(one["ci_low"])
    none = paired_stats(a, pd.Series([1.0], index=[9]))
    assert none["n_folds"] == 0 and math.isnan(none["mean_diff"])


def test_missing_folds_are_paired_on_the_folds_both_have():
    table = synthetic(noise=0.01, seed=1)
    drop = (table["kind"] == "distill") & (table["teacher"] == "small") & (table["fold"] == 2) \
        & (table["temperature"] == 1.0) & (table["teacher_augment"] == "plain")
    table = table[~drop]
    table = table[~((table["kind"] == "train") & (table["augment"] == "shift") & (table["fold"] == 0))]
    found = findings_table(table, [ROW])
    r = pick(found, "im_kd_minus_self", 1.0)
    assert r["n_folds"] == 2
    kd = table[(table["temperature"] == 1.0) & (table["reference"] == "big/plain")
               & (table["teacher"] == "big")].set_index("fold")["im"]
    self_ = table[(table["temperature"] == 1.0) & (table["teacher"] == "small")
                  & (table["teacher_augment"] == "plain")].set_index("fold")["im"]
    assert r["mean_diff"] == pytest.approx((kd.loc[[0, 1]] - self_.loc[[0, 1]]).mean())
    assert pick(found, "im_kd_minus_self", 4.0)["n_folds"] == 3
    assert pick(found, "im_kd_best_minus_aug")["n_folds"] == 2


def test_a_fold_twice_is_an_error():
    table = synthetic()
    with pytest.raises(ValueError, match="more than once"):
        findings_table(pd.concat([table, table.iloc[[0]]]), [ROW])


# -------------------------------------------------------------------------------------- verdicts
def test_a_teacher_invariance():
    assert verdict_of(synthetic(), "a") == HOLDS
    table = synthetic()
    table.loc[(table["model"] == "big") & (table["kind"] == "train") & (table["fold"] == 1), "im"] = 2e-4
    assert verdict_of(table, "a") == FAILS
    found = findings_table(table, [ROW])
    assert pick(found, "teacher_im")["max_a"] == pytest.approx(2e-4)


def test_b_kd_versus_self_distillation():
    # KD about as invariant as self-distillation: holds.
    assert verdict_of(synthetic(kd=(0.49, 0.92, 0.87), self=(0.50, 0.9, 0.85)), "b") == HOLDS
    # KD much more invariant than self-distillation at one T: does not hold.
    table = synthetic(kd=({1.0: 0.49, 4.0: 0.10}, 0.92, 0.87), self=(0.50, 0.9, 0.85))
    assert verdict_of(table, "b") == FAILS
    found = findings_table(table, [ROW])
    assert pick(found, "im_kd_minus_self", 4.0)["verdict"] == FAILS
    assert pick(found, "im_kd_minus_self", 1.0)["verdict"] == HOLDS
    # An improvement straddling the 10 % margin (0.05) with large fold noise: inconclusive.
    assert verdict_of(synthetic(kd=(0.45, 0.92, 0.87), self=(0.50, 0.9, 0.85), noise=0.05), "b") == UNSURE


def test_c_augmentation_versus_best_kd():
    table = synthetic(kd=({1.0: 0.40, 4.0: 0.30}, 0.92, 0.87), s_aug=(0.05, None, 0.84))
    assert verdict_of(table, "c") == HOLDS
    best = pick(findings_table(table, [ROW]), "im_kd_best_minus_aug")
    assert best["best_temperature"] == 4.0 and best["mean_a"] == pytest.approx(0.30, abs=0.01)
    assert verdict_of(synthetic(kd=({1.0: 0.40, 4.0: 0.02}, 0.92, 0.87), s_aug=(0.30, None, 0.8)),
                      "c") == FAILS
    assert verdict_of(synthetic(kd=(0.31, 0.92, 0.87), s_aug=(0.30, None, 0.8), noise=0.05),
                      "c") == UNSURE


def test_d_fidelity_control():
    assert verdict_of(synthetic(kd=(0.48, 0.95, 0.87), ctrl=(0.48, 0.70, 0.86)), "d") == HOLDS
    assert verdict_of(synthetic(kd=(0.48, 0.70, 0.87), ctrl=(0.48, 0.90, 0.86)), "d") == FAILS
    assert verdict_of(synthetic(kd=(0.48, 0.80, 0.87), ctrl=(0.48, 0.80, 0.86), noise=0.05),
                      "d") == UNSURE


def test_e_accuracy():
    assert verdict_of(synthetic(kd=(0.48, 0.9, 0.90), s=(0.5, None, 0.85)), "e") == HOLDS
    assert verdict_of(synthetic(kd=(0.48, 0.9, {1.0: 0.50, 4.0: 0.86}), s=(0.5, None, 0.85)),
                      "e") == FAILS
    found = findings_table(synthetic(kd=(0.48, 0.9, 0.90), s=(0.5, None, 0.85)), [ROW])
    sentence = {c[:3]: s for c, _, s in verdicts(found, [ROW])[ROW["name"]]}["(e)"]
    assert "significantly better than s alone at T=1, T=4" in sentence


# The distilled rows of synthetic(), by role: (teacher, teacher_augment).
DISTILLED_ROLES = {"self": ("small", "plain"), "aug_self": ("small", "shift"), "kd": ("big", "plain"),
                   "ctrl": ("big-prime", "plain")}


def with_recipes(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the recipe columns of a run with recipes: its distillations are the paper's
    plain KD in the forward direction."""
    table = table.copy()
    distilled = table["kind"] == "distill"
    table["recipe"] = np.where(distilled, "plain", None)
    table["recipe_name"] = table["recipe"]
    table["kd_direction"] = np.where(distilled, "forward", None)
    table["recipe_symmetry"] = None
    table["recipe_lambda"] = math.nan
    return table


def add_variant(table: pd.DataFrame, variant: str, name: str, direction: str = "forward",
                symmetry: str | None = None, lam: float = math.nan, noise: float = 0.002, seed: int = 1,
                spread: float = 0.0, **roles) -> pd.DataFrame:
    """``table`` (from :func:`with_recipes`) plus a recipe variant of every plain distillation;
    ``roles`` (self, aug_self, kd, ctrl) = (im, agreement, accuracy), each a number or {T: number},
    None keeps plain's value, with Gaussian fold noise of sd ``noise``; ``spread`` moves folds 0, 1
    and 2 by −spread, +spread and 0 (a difference whose interval is wide whatever the seed)."""
    rng = np.random.default_rng(seed)
    new = table[(table["kind"] == "distill") & (table["recipe"] == "plain")].copy()
    new["recipe"], new["recipe_name"], new["kd_direction"] = variant, name, direction
    new["recipe_symmetry"], new["recipe_lambda"] = symmetry, lam
    for role, spec in roles.items():
        teacher, augment = DISTILLED_ROLES[role]
        sel = (new["teacher"] == teacher) & (new["teacher_augment"] == augment)
        for column, x in zip(("im", "agreement", "accuracy"), spec):
            if x is not None:
                at_t = new.loc[sel, "temperature"].map(lambda t, x=x: value(x, t)).to_numpy(dtype=float)
                shift = spread * new.loc[sel, "fold"].map({0: -1.0, 1: 1.0}).fillna(0.0).to_numpy()
                new.loc[sel, column] = np.clip(at_t + shift + rng.normal(0, noise, int(sel.sum())), 0.0, 1.0)
                if column == "im":
                    new.loc[sel, "val_im"] = new.loc[sel, "im"]
    return pd.concat([table, new], ignore_index=True)


def test_i_consistency_is_decided_by_its_im_comparison_at_the_best_lambda():
    """(i) rests on IM(t→s, consistency at the best λ) − IM(t→s, plain), rule "below"; the
    accuracy change beside it has no rule and must not keep the claim from holding."""
    table = with_recipes(synthetic())
    for lam, im in ((1.0, 0.30), (3.0, 0.20)):
        table = add_variant(table, f"consistency_lambda{lam:g}_shift", "consistency", symmetry="shift",
                            lam=lam, noise=0.0, kd=(im, None, None))
    assert verdict_of(table, "i") == HOLDS
    found = findings_table(table, [ROW])
    for temp in TEMPS:
        assert pick(found, "im_consistency_minus_plain", temp)["best_lambda"] == 3.0
        assert pd.isna(pick(found, "accuracy_consistency_minus_plain", temp)["verdict"])
    # a penalty that leaves t→s less invariant than plain KD: does not hold
    table.loc[table["recipe_name"] == "consistency", "im"] = 0.9
    assert verdict_of(table, "i") == FAILS


def augmented(base=None, **roles):
    table = with_recipes(synthetic() if base is None else base)
    return add_variant(table, "augmented_shift", "augmented", symmetry="shift", **roles)


def test_f_augmented_kd_reaches_the_augmented_students_invariance():
    # IM(s_aug) is 0.10: the margin is +0.01
    assert verdict_of(augmented(kd=(0.08, None, None)), "f") == HOLDS
    assert verdict_of(augmented(kd=(0.30, None, None)), "f") == FAILS
    assert verdict_of(augmented(kd=(0.105, None, None), spread=0.1), "f") == UNSURE
    # without the recipe in the run, the claim is not reported at all
    assert "(f)" not in {c[:3] for c, _, _ in verdicts(findings_table(with_recipes(synthetic()), [ROW]),
                                                        [ROW])[ROW["name"]]}


def test_g_augmented_kd_is_more_accurate_than_augmentation():
    # accuracy(s_aug) is 0.84
    assert verdict_of(augmented(kd=(None, None, 0.90)), "g") == HOLDS
    assert verdict_of(augmented(kd=(None, None, 0.80)), "g") == FAILS
    assert verdict_of(augmented(kd=(None, None, 0.845), spread=0.1), "g") == UNSURE


def test_h_the_teacher_matters_under_the_augmented_recipe():
    holds = dict(kd=(0.10, 0.95, None), aug_self=(0.40, 0.80, None), self=(0.40, 0.80, None),
                 ctrl=(0.40, 0.70, None))
    assert verdict_of(augmented(**holds), "h") == HOLDS
    # as invariant as self-distillation: the IM comparison fails, and with it the claim
    assert verdict_of(augmented(**{**holds, "kd": (0.45, 0.95, None)}), "h") == FAILS
    # more invariant, but no more faithful than the control: fails too
    assert verdict_of(augmented(**{**holds, "kd": (0.10, 0.60, None)}), "h") == FAILS
    # more invariant, and the agreement interval straddles 0: inconclusive
    unsure = {**holds, "kd": (0.10, 0.70, None)}
    assert verdict_of(augmented(spread=0.1, **unsure), "h") == UNSURE


def test_i_is_inconclusive_when_the_interval_straddles():
    table = add_variant(with_recipes(synthetic()), "consistency_lambda1_shift", "consistency",
                        symmetry="shift", lam=1.0, kd=(0.48, None, None), spread=0.1)
    assert verdict_of(table, "i") == UNSURE


def test_j_reverse_kl_lowers_the_accuracy_at_some_temperature():
    def reverse(accuracy, spread=0.0):
        return add_variant(with_recipes(synthetic()), "plain_reverse", "plain", direction="reverse",
                           kd=(None, None, accuracy), spread=spread)

    # forward KD's accuracy is 0.87; a claim about some temperature holds if one T shows it
    assert verdict_of(reverse(0.80), "j") == HOLDS
    assert verdict_of(reverse({1.0: 0.92, 4.0: 0.80}), "j") == HOLDS  # at T = 4 only
    assert verdict_of(reverse(0.92), "j") == FAILS
    assert verdict_of(reverse(0.87, spread=0.1), "j") == UNSURE


def test_b_is_an_equivalence_a_much_less_invariant_kd_student_fails_too():
    table = synthetic(kd=(0.90, 0.92, 0.87), self=(0.50, 0.9, 0.85))
    assert verdict_of(table, "b") == FAILS
    found = findings_table(table, [ROW])
    sentence = {c[:3]: s for c, _, s in verdicts(found, [ROW])[ROW["name"]]}["(b)"]
    assert "less invariant than self-distillation at T=1, T=4" in sentence


def test_one_fold_is_inconclusive_except_the_teacher():
    table = synthetic(k=1, kd=(0.1, 0.99, 0.99))
    found = findings_table(table, [ROW])
    assert (found["n_folds"] == 1).all() and found["ci_low"].isna().all()
    result = {c[:3]: v for c, v, _ in verdicts(found, [ROW])[ROW["name"]]}
    assert result == {"(a)": HOLDS, "(b)": UNSURE, "(c)": UNSURE, "(d)": UNSURE, "(e)": UNSURE}


def test_missing_series_give_inconclusive_not_errors():
    table = synthetic()
    table = table[~((table["kind"] == "train") & (table["augment"] == "shift"))]
    table = table[~(table["teacher"] == "big-prime")]
    found = findings_table(table, [ROW])
    result = {c[:3]: v for c, v, _ in verdicts(found, [ROW])[ROW["name"]]}
    assert result["(c)"] == UNSURE and result["(d)"] == UNSURE
    assert result["(b)"] == HOLDS


# -------------------------------------------------------------------------------------- markdown
def test_markdown_has_every_row_and_sentence(tmp_path):
    other = {**ROW, "name": "second-row", "dataset": "other"}
    table = pd.concat([synthetic(), synthetic(row=other, kd=(0.1, 0.7, 0.5), seed=5)],
                      ignore_index=True)
    rows = [ROW, other]
    found = findings_table(table, rows)
    v = verdicts(found, rows)
    assert v[ROW["name"]] != v[other["name"]]
    md = to_markdown(found, v)
    for row in rows:
        assert f"## {row['name']}" in md
        for claim, verdict, sentence in v[row["name"]]:
            assert f"**{claim}: {verdict}.** {sentence}" in md
    assert md.count("| 4 |") + md.count("| 4 (best) |") == 2
    metrics = tmp_path / "metrics.parquet"
    table.to_parquet(metrics, index=False)
    written = write_findings(metrics, rows, tmp_path / "out" / "f.parquet", tmp_path / "out" / "f.md")
    back = pd.read_parquet(tmp_path / "out" / "f.parquet")
    assert len(back) == len(written) and set(back["row"]) == {"toy-row", "second-row"}
    assert (tmp_path / "out" / "f.md").read_text(encoding="utf-8") == md


# ---------------------------------------------------------------- tests, levels and corrections
def _st(diffs) -> dict:
    d = pd.Series(np.asarray(diffs, dtype=float))
    return paired_stats(d)


@pytest.mark.parametrize("diffs", [[0.031, 0.012, 0.024, 0.040], [-0.02, 0.01, -0.005], [0.2, 0.25, 0.21, 0.3, 0.22]])
@pytest.mark.parametrize("theta", [0.0, 0.01, -0.03])
def test_p_values_match_scipys_t_tests(diffs, theta):
    from kdinv.analysis.stats import p_values

    st = _st(diffs)
    greater = stats.ttest_1samp(diffs, theta, alternative="greater").pvalue  # H0: mu <= theta
    less = stats.ttest_1samp(diffs, theta, alternative="less").pvalue
    two = stats.ttest_1samp(diffs, theta).pvalue
    p_h, p_f = p_values(st, theta, "above")
    assert p_h == pytest.approx(min(1, 2 * greater), rel=1e-9) and p_f == pytest.approx(min(1, 2 * less), rel=1e-9)
    assert min(p_h, p_f) == pytest.approx(two, rel=1e-9)  # a two-sided test, split by its sign
    p_h, p_f = p_values(st, theta, "below")
    assert p_h == pytest.approx(min(1, 2 * less), rel=1e-9)
    # non-inferiority: one-sided at 5 %, both ways
    assert p_values(st, theta, "not_above") == pytest.approx((less, greater), rel=1e-9)
    # equivalence within +-m: TOST, the larger of the two one-sided p-values
    m = abs(theta) + 0.02
    tost = max(stats.ttest_1samp(diffs, -m, alternative="greater").pvalue,
               stats.ttest_1samp(diffs, m, alternative="less").pvalue)
    beyond = 2 * min(stats.ttest_1samp(diffs, -m, alternative="less").pvalue,
                     stats.ttest_1samp(diffs, m, alternative="greater").pvalue)
    assert p_values(st, m, "within") == pytest.approx((tost, min(1, beyond)), rel=1e-9)
    # reverse KL's rule: two-sided against 0, its opposite: the 95 % interval above -margin
    lowers = p_values(st, 0.01, "lowers")
    assert lowers[0] == pytest.approx(min(1, 2 * stats.ttest_1samp(diffs, 0, alternative="less").pvalue))
    assert lowers[1] == pytest.approx(min(1, 2 * stats.ttest_1samp(diffs, -0.01, alternative="greater").pvalue))


@pytest.mark.parametrize("seed", range(20))
def test_tests_decide_as_the_intervals_do(seed):
    """The p-value decisions at 5 % are those of the intervals: 95 % for directional rules and for
    "beyond the margin", 90 % for equivalence (TOST) and non-inferiority."""
    from kdinv.analysis.stats import decide

    rng = np.random.default_rng(seed)
    diffs = rng.normal(rng.normal(0, 0.02), 0.015, size=int(rng.integers(3, 7)))
    st, theta, m = _st(diffs), float(rng.normal(0, 0.01)), float(abs(rng.normal(0.02, 0.01)))
    lo, hi, lo90, hi90 = st["ci_low"], st["ci_high"], st["ci90_low"], st["ci90_high"]
    assert decide(st, theta, "above") == (HOLDS if lo > theta else FAILS if hi < theta else UNSURE)
    assert decide(st, theta, "below") == (HOLDS if hi < theta else FAILS if lo > theta else UNSURE)
    assert decide(st, theta, "not_above") == (HOLDS if hi90 < theta else FAILS if lo90 > theta else UNSURE)
    assert decide(st, m, "within") == (HOLDS if -m < lo90 and hi90 < m else
                                       FAILS if hi < -m or lo > m else UNSURE)


def test_b_is_decided_by_the_90_percent_interval():
    """An equivalence at 5 % is two one-sided tests: the 90 % interval inside the margins suffices,
    though the 95 % one reaches beyond them."""
    from kdinv.analysis.stats import decide

    diffs = [0.045, -0.02, 0.0, 0.02]
    st = _st(diffs)
    assert -0.05 < st["ci90_low"] and st["ci90_high"] < 0.05 and st["ci_high"] > 0.05  # the case
    assert decide(st, 0.05, "within") == HOLDS
    p = max(stats.ttest_1samp(diffs, -0.05, alternative="greater").pvalue,
            stats.ttest_1samp(diffs, 0.05, alternative="less").pvalue)
    assert 0.025 < p < 0.05


def _closed_testing(p, alpha=0.05):
    """Holm by its definition as a closed test: H_i is rejected when every intersection that
    contains it is rejected by Bonferroni (min p over the subset < alpha / its size)."""
    import itertools

    idx = [i for i, x in enumerate(p) if np.isfinite(x)]
    out = [False] * len(p)
    for i in idx:
        subsets = (s for r in range(1, len(idx) + 1) for s in itertools.combinations(idx, r) if i in s)
        out[i] = all(min(p[j] for j in s) < alpha / len(s) for s in subsets)
    return out


@pytest.mark.parametrize("seed", range(30))
def test_holm_is_the_closed_bonferroni_test(seed):
    from kdinv.analysis.stats import holm

    rng = np.random.default_rng(seed)
    p = list(rng.uniform(0, 0.08, size=int(rng.integers(1, 6))))
    if seed % 3 == 0:
        p.append(math.nan)  # an untested temperature is not counted
    assert holm(p) == _closed_testing(p)


def _reverse_at(two_sided_p: dict, sd=0.01, k=3):
    """A run where reverse KL's accuracy differs from forward KL's by a mean whose two-sided
    paired t-test has the p-value ``two_sided_p[T]`` (and sd ``sd``) over 3 folds."""
    d = {t: -stats.t.isf(p / 2, k - 1) * sd / math.sqrt(k) for t, p in two_sided_p.items()}
    base = with_recipes(synthetic(noise=0.0))
    table = add_variant(base, "plain_reverse", "plain", direction="reverse", noise=0.0, spread=sd,
                        kd=(None, None, {t: 0.87 + d[t] for t in d}))
    return table


def test_j_is_corrected_over_the_temperatures():
    # one-sided tests at 2.5 % uncorrected would say "holds" at T = 1 (p = 0.03 two-sided < 0.05)
    found = findings_table(_reverse_at({1.0: 0.03, 4.0: 0.04}), [ROW])
    r1 = pick(found, "accuracy_reverse_minus_forward", 1.0)
    assert r1["p_holds"] == pytest.approx(0.03, rel=1e-6)
    assert verdict_of(_reverse_at({1.0: 0.03, 4.0: 0.04}), "j") == UNSURE  # 0.03 > 0.05 / 2
    assert verdict_of(_reverse_at({1.0: 0.02, 4.0: 0.04}), "j") == HOLDS  # 0.02 < 0.025, then 0.04 < 0.05
    found = findings_table(_reverse_at({1.0: 0.02, 4.0: 0.30}), [ROW])
    assert pick(found, "accuracy_reverse_minus_forward", 1.0)["verdict"] == HOLDS
    assert pick(found, "accuracy_reverse_minus_forward", 4.0)["verdict"] == UNSURE
    sentence = {c[:3]: s for c, _, s in verdicts(found, [ROW])[ROW["name"]]}["(j)"]
    assert "less accurate than forward KL at T=1" in sentence and "at every temperature" not in sentence
    assert "not significantly so at T=4" in sentence and "Holm-corrected over 2 tests" in sentence


def test_j_does_not_hold_where_reverse_kl_loses_less_than_the_margin_everywhere():
    base = with_recipes(synthetic(noise=0.0))
    table = add_variant(base, "plain_reverse", "plain", direction="reverse", noise=0.0, spread=0.001,
                        kd=(None, None, 0.868))
    found = findings_table(table, [ROW])
    assert (found.loc[found["claim"] == "j", "verdict"] == FAILS).all()
    assert verdict_of(table, "j") == FAILS


def test_every_claims_failures_are_corrected_over_the_temperatures():
    """(d) fails at one T on p = 0.04 alone: uncorrected that would decide, Holm over 2 does not."""
    sd, k = 0.01, 3
    d = -stats.t.isf(0.04 / 2, k - 1) * sd / math.sqrt(k)
    table = synthetic(noise=0.0, kd=(0.48, 0.92, 0.87), ctrl=(0.48, {1.0: 0.80, 4.0: 0.92 - d}, 0.86))
    fold = table["fold"].map({0: -sd, 1: sd, 2: 0.0})
    ctrl = (table["teacher"] == "big-prime") & (table["reference"] == "big/plain")
    table.loc[ctrl, "agreement"] += fold[ctrl]
    found = findings_table(table, [ROW])
    r4 = pick(found, "agreement_kd_minus_control", 4.0)
    assert r4["p_fails"] == pytest.approx(0.04, rel=1e-6) and r4["verdict"] == UNSURE
    assert pick(found, "agreement_kd_minus_control", 1.0)["verdict"] == HOLDS
    assert verdict_of(table, "d") == UNSURE


def test_two_folds_or_identical_differences_give_no_verdict_and_say_why():
    # 2 folds: the interval exists, it is narrow and clear of 0, and still no verdict
    table = synthetic(k=2, kd=(0.48, 0.99, 0.95), ctrl=(0.48, 0.5, 0.86))
    found = findings_table(table, [ROW])
    r = pick(found, "agreement_kd_minus_control", 1.0)
    assert r["n_folds"] == 2 and r["ci_low"] > 0 and r["verdict"] == UNSURE
    sentences = {c[:3]: (v, s) for c, v, s in verdicts(found, [ROW])[ROW["name"]]}
    assert sentences["(d)"][0] == UNSURE and "fewer than 3 paired folds (k = 2)" in sentences["(d)"][1]
    assert sentences["(a)"][0] == HOLDS  # a property of each teacher: one fold suffices
    # 3 folds whose accuracy differences are identical (multiples of 1/N): sd = 0
    table = synthetic(noise=0.0, kd=(0.48, 0.92, 0.87), s=(0.5, None, 0.85))
    found = findings_table(table, [ROW])
    r = pick(found, "accuracy_kd_minus_alone", 1.0)
    assert r["sd_diff"] == 0 and r["ci_low"] == r["ci_high"] and r["verdict"] == UNSURE
    v, s = {c[:3]: (v, s) for c, v, s in verdicts(found, [ROW])[ROW["name"]]}["(e)"]
    assert v == UNSURE and "sd = 0" in s


def test_per_temperature_verdicts_are_in_the_table_and_the_report(tmp_path):
    table = synthetic(kd=({1.0: 0.49, 4.0: 0.10}, 0.92, 0.87), self=(0.50, 0.9, 0.85))
    metrics = tmp_path / "metrics.parquet"
    table.to_parquet(metrics, index=False)
    write_findings(metrics, [ROW], tmp_path / "f.parquet", tmp_path / "f.md")
    back = pd.read_parquet(tmp_path / "f.parquet")
    b = back[back["claim"] == "b"].set_index("temperature")
    assert b.loc[1.0, "claim_verdict_at_t"] == HOLDS and b.loc[4.0, "claim_verdict_at_t"] == FAILS
    assert (b["claim_verdict"] == FAILS).all()
    assert "At each temperature: T=1 holds; T=4 does not hold." in (tmp_path / "f.md").read_text(encoding="utf-8")


def test_a_table_without_validation_im_is_refused():
    table = synthetic().drop(columns="val_im")
    with pytest.raises(ValueError, match="no column 'val_im'"):
        findings_table(table, [ROW])


def test_the_best_temperature_is_labelled_as_chosen():
    table = synthetic(kd=({1.0: 0.40, 4.0: 0.30}, 0.92, 0.87))
    found = findings_table(table, [ROW])
    md = to_markdown(found, verdicts(found, [ROW]))
    assert "Best KD student (best T on validation IM): T = 4" in md and "lowest IM(t→s)" not in md
    # chosen on validation IM, not on the test split's IM
    table.loc[(table["teacher"] == "big") & (table["temperature"] == 1.0), "val_im"] = 0.01
    assert pick(findings_table(table, [ROW]), "im_kd_best_minus_aug")["best_temperature"] == 1.0


def test_b_and_c_are_decided_again_under_the_other_measures_and_disagreement_is_said():
    """(b) holds under IM; under the Lie derivative the KD student is far more invariant than
    self-distillation, so there (b) does not hold, and the sentence says the measures disagree;
    under the orbit gap (equal to IM here) they agree. Both are rows of the findings table."""
    table = synthetic(kd=(0.49, 0.92, 0.87), self=(0.50, 0.9, 0.85))
    table["orbit_gap_rot90_2d"] = table["im"]
    kd = (table["kind"] == "distill") & (table["teacher"] == ROW["teacher"])
    table["lie"] = table["im"].where(~kd, table["im"] * 0.2)
    found = findings_table(table, [ROW])
    assert set(found["claim"].dropna()) >= {"b@lie", "b@orbit_gap_rot90_2d", "c@lie", "c@orbit_gap_rot90_2d"}
    assert found[found["claim"] == "b@lie"]["claim_verdict"].iloc[0] == FAILS
    assert found[found["claim"] == "b@orbit_gap_rot90_2d"]["claim_verdict"].iloc[0] == HOLDS
    (_, verdict, sentence), = [v for v in verdicts(found, [ROW])[ROW["name"]] if v[0].startswith("(b)")]
    assert verdict == HOLDS  # the claim's own verdict is IM's
    assert "under the Lie derivative it does not hold" in sentence
    assert "under the orbit gap (rot90_2d) it holds" in sentence
    assert "not the verdict under IM: the Lie derivative disagrees" in sentence
    assert "orbit gap (rot90_2d) disagree" not in sentence
    # without the measures' columns nothing is added
    plain = findings_table(synthetic(kd=(0.49, 0.92, 0.87), self=(0.50, 0.9, 0.85)), [ROW])
    assert not plain["claim"].dropna().str.contains("@").any()
