"""Claim (k): does augmentation give a more invariant student than the best KD recipe? The best
KD student is chosen over the recipes that ran, their temperatures and λ on validation IM; the
claim is decided on made-up metric tables where it holds, fails and is inconclusive."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kdinv.analysis.claims import KD_RECIPES, best_candidate
from kdinv.analysis.findings import FAILS, HOLDS, UNSURE, findings_table, to_markdown, verdicts

ROW = {"name": "rot-row", "dataset": "clouds", "symmetry": "so3", "teacher": "big",
       "teacher_prime": "big-prime", "student": "small"}  # fmt: skip
TEMPS = (1.0, 4.0)
PLAIN_KD_IM = 0.48
S_AUG_IM = 0.10
VARIANTS = {  # variant id: (recipe_name, λ)
    "plain": ("plain", math.nan),
    "augmented_so3": ("augmented", math.nan),
    "consistency_lambda1_so3": ("consistency", 1.0),
    "consistency_lambda3_so3": ("consistency", 3.0),
}


def table(kd_im: dict, folds: int = 3, spread: float = 0.0, val_im: dict | None = None, seed: int = 0):
    """A metric table of one row with k folds: the trained models and, per recipe variant that
    ``kd_im`` names ({variant: IM or {T: IM}}; plain KD always, at 0.48), the t→s, s→s, s_aug→s
    and t'→s' distillations. Folds 0, 1 and 2 of every t→s IM move by −spread, +spread and 0;
    small fold noise everywhere. ``val_im`` overrides a variant's validation IM (else = IM)."""
    rng = np.random.default_rng(seed)
    kd_im = {"plain": PLAIN_KD_IM, **kd_im}
    s, t, tp, sym = ROW["student"], ROW["teacher"], ROW["teacher_prime"], ROW["symmetry"]
    records = []

    def rec(kind, model, augment, fold, im, **extra):
        return {"dataset": ROW["dataset"], "symmetry": sym, "fold": fold, "kind": kind, "model": model,
                "augment": augment, "im": im, "val_im": extra.pop("val_im", im), "accuracy": 0.8,
                "agreement": 0.9 if kind == "distill" else math.nan, "temperature": math.nan,
                "reference": None, "teacher": None, "teacher_augment": None, "recipe": None,
                "recipe_name": None, "kd_direction": None, "recipe_symmetry": None,
                "recipe_lambda": math.nan, **extra}  # fmt: skip

    for fold in range(folds):
        for model, augment, im in ((t, "plain", 1e-8), (tp, "plain", 1e-8), (s, "plain", 0.5),
                                   (s, sym, S_AUG_IM + rng.normal(0, 0.002))):
            records.append(rec("train", model, augment, fold, im))
        for variant, spec in kd_im.items():
            name, lam = VARIANTS[variant]
            for temp in TEMPS:
                at_t = spec[temp] if isinstance(spec, dict) else spec
                move = spread * {0: -1.0, 1: 1.0}.get(fold, 0.0)
                for teacher, taug, ref, im in ((t, "plain", f"{t}/plain", at_t + move), (s, "plain", f"{s}/plain", 0.5),
                                               (s, sym, f"{s}/{sym}", 0.3), (tp, "plain", f"{t}/plain", 0.49)):
                    im = float(np.clip(im + rng.normal(0, 0.002), 0, 1))
                    val = (val_im or {}).get(variant, im) if teacher == t else im
                    records.append(rec(
                        "distill", s, "plain", fold, im, val_im=val, temperature=temp, reference=ref,
                        teacher=teacher, teacher_augment=taug, recipe=variant, recipe_name=name,
                        kd_direction="forward", recipe_symmetry=None if name == "plain" else sym,
                        recipe_lambda=lam))
    return pd.DataFrame.from_records(records)


def k_row(tab) -> pd.Series:
    found = findings_table(tab, [ROW])
    sel = found[found["comparison"] == "im_kd_best_recipe_minus_aug"]
    assert len(sel) == 1
    return sel.iloc[0]


def verdict(tab) -> str | None:
    found = findings_table(tab, [ROW])
    for text, v, _ in verdicts(found, [ROW])[ROW["name"]]:
        if text.startswith("(k)"):
            return v
    return None


def test_holds_when_augmentation_beats_every_recipe_and_the_best_is_chosen_on_validation_im():
    tab = table(
        {"augmented_so3": 0.30, "consistency_lambda1_so3": 0.28, "consistency_lambda3_so3": {1.0: 0.35, 4.0: 0.22}}
    )
    r = k_row(tab)
    assert (r["a"], r["best_temperature"], r["best_lambda"]) == ("IM(t→s, consistency)", 4.0, 3.0)
    assert r["mean_a"] == pytest.approx(0.22, abs=0.01) and r["mean_b"] == pytest.approx(S_AUG_IM, abs=0.01)
    assert verdict(tab) == HOLDS
    # the paired interval is scipy's
    sel = tab[(tab["recipe"] == "consistency_lambda3_so3") & (tab["temperature"] == 4.0)
              & (tab["teacher"] == "big")].set_index("fold")["im"]
    aug = tab[(tab["kind"] == "train") & (tab["augment"] == "so3")].set_index("fold")["im"]
    ci = stats.ttest_rel(sel.sort_index(), aug.sort_index()).confidence_interval(0.95)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high))


def test_fails_when_a_recipe_is_more_invariant_than_augmentation():
    tab = table({"augmented_so3": 0.04, "consistency_lambda1_so3": 0.2})
    r = k_row(tab)
    assert r["a"] == "IM(t→s, augmented)" and np.isnan(r["best_lambda"])
    assert verdict(tab) == FAILS


def test_inconclusive_when_the_interval_straddles_zero():
    assert verdict(table({"augmented_so3": S_AUG_IM}, spread=0.1)) == UNSURE


def test_the_choice_reads_validation_im_not_the_test_split():
    """The augmented student's test IM is worse than consistency's, but its validation IM is the
    lowest: it is the one chosen, and tested on its test IM."""
    tab = table({"augmented_so3": 0.30, "consistency_lambda1_so3": 0.25}, val_im={"augmented_so3": 0.01})
    r = k_row(tab)
    assert r["a"] == "IM(t→s, augmented)" and r["mean_a"] == pytest.approx(0.30, abs=0.01)


def test_two_folds_give_no_verdict_and_without_recipes_the_claim_is_not_reported():
    assert verdict(table({"augmented_so3": 0.30}, folds=2)) == UNSURE
    assert verdict(table({})) is None  # plain KD alone: (c) answers it


def test_ties_go_to_the_earlier_recipe_then_the_lowest_temperature():
    frame = pd.DataFrame({"temperature": [1.0, 4.0], "val_im": [0.2, 0.2], "fold": [0, 0], "im": [0.2, 0.2]})
    chosen = best_candidate([(KD_RECIPES[0], frame), (KD_RECIPES[1], frame.copy())])
    assert chosen[0] == KD_RECIPES[0] and chosen[1] == 1.0
    assert best_candidate([(KD_RECIPES[0], frame.iloc[0:0])]) is None


def test_the_report_names_the_chosen_recipe():
    tab = table({"augmented_so3": 0.30, "consistency_lambda1_so3": 0.25})
    found = findings_table(tab, [ROW])
    md = to_markdown(found, verdicts(found, [ROW]))
    assert "Best KD recipe (on validation IM): IM(t→s, consistency) at T = " in md
    assert "**(k) augmentation instils more invariance than the best KD recipe" in md
