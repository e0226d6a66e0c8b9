"""Does this run reproduce the paper's claims? Fold-paired statistics and verdicts per figure row.

Every number comes from the collected metric table (``results/metrics.parquet``, one row per model
run, fold, symmetry and reference) and the config's ``rows``. For each row the series are the ones
of Figure 1 (see :func:`kdinv.analysis.figures.row_series`):

==========  ===============================================================================
t           the teacher trained on plain data (kind train, model t, augment plain)
s           the student trained alone (kind train, model s, augment plain)
s_aug       the student trained on transformed data (kind train, model s, augment = symmetry)
s→s         self-distillation (kind distill, teacher s/plain, reference s/plain), per T
t→s         the distillation under test (teacher t/plain, reference t/plain), per T
t'→s' vs t  the fidelity control of §3.4: the student distilled from t', measured against t
==========  ===============================================================================

Statistics (:mod:`kdinv.analysis.stats`). Two series are paired by ``fold`` (only the folds both
have); with k pairs the difference d = a − b has mean d̄, standard deviation sd (ddof = 1) and the
95 % t-interval d̄ ± t₀.₉₇₅,ₖ₋₁ · sd/√k (and the 90 % one). A verdict comes from t-tests of d at
5 %, corrected with Holm's procedure over a claim's temperatures; with k < 3 or sd = 0 no test is
made (``undecided`` says why) and the verdict is "inconclusive". The folds share the data split,
the teacher and the IM copies, so pairing removes the between-fold variation that the figure's
error bars show.

Each claim below is one object of :data:`kdinv.analysis.claims.CLAIMS` (its comparisons, threshold,
verdict rule and sentence); this module runs them over the table and writes the reports.

Each comparison is a row of the findings table (column ``comparison``; ``temperature`` is NaN
for the per-row items). The claims, their comparisons, thresholds and verdict rules are listed in
docs/method.md ("The findings"); in short:

(a) ``teacher_im``: the largest IM(t) over folds is at most 1e-4 (one fold suffices).
(b) ``im_kd_minus_self``: IM(t→s) − IM(s→s) lies within ± 10 % of the mean IM(s→s), per T (an
    equivalence test: two one-sided tests, the 90 % interval).
(c) ``im_kd_best_minus_aug``: IM(t→s) at the best T − IM(s_aug) is above 0; the best T is the
    one whose t→s has the lowest mean validation IM over its folds (ties: lowest T).
(d) ``agreement_kd_minus_control``: agreement(t→s, vs t) − agreement(t'→s', vs t) is above 0, per T.
(e) ``accuracy_kd_minus_alone``: accuracy(t→s) − accuracy(s) is at least −1 percentage point, per T.
(f)-(j) test the distillation recipes, where they ran. ``im_kd_minus_aug`` (IM(t→s) − IM(s_aug),
per T) is shown without a verdict.
(k) ``im_kd_best_recipe_minus_aug``: IM of the best KD student over the recipes that ran (plain,
    augmented, consistency), temperatures and λ − IM(s_aug) is above 0; best is lowest mean
    validation IM over the folds (ties: plain first, then the lowest T and λ). Decided where a
    recipe beyond plain ran; its question is the continuous groups' (docs/beyond.md).

A claim about every temperature holds when it holds at every T, does not hold when it fails at
some T (Holm-corrected), and is inconclusive otherwise; (j) is a claim about some temperature.
Each comparison row carries its verdict at its temperature (``verdict``), the claim's verdict at
that temperature (``claim_verdict_at_t``) and the row's summary of the claim (``claim_verdict``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from kdinv.analysis.claims import (
    CLAIMS,
    COMPARISONS,
    MEASURE_CHECKED,
    PAPER_CLAIMS,
    Claim,
    Comparison,
    Series,
    at,
    best_candidate,
    best_temperature,
    best_variant,
    fmt,
    interval,
    measure_columns,
    per_fold,
    select,
    under_measure,
)
from kdinv.analysis.stats import FAILS, HOLDS, UNSURE, p_values, paired_stats, undecided
from kdinv.distill.recipes import PAPER

log = logging.getLogger(__name__)

__all__ = ["FAILS", "HOLDS", "UNSURE", "findings_table", "paired_stats", "to_html", "to_markdown",
           "verdicts", "write_findings"]

COLUMNS = [
    "row", "dataset", "symmetry", "teacher", "teacher_prime", "student", "comparison", "claim",
    "temperature", "best_temperature", "best_lambda", "a", "b", "mean_a", "mean_b", "max_a", "mean_diff",
    "sd_diff", "ci_low", "ci_high", "ci90_low", "ci90_high", "n_folds", "threshold", "rule", "p_holds",
    "p_fails", "undecided", "verdict", "claim_verdict_at_t", "claim_verdict",
]


def _temperatures(frames) -> list[float]:
    values = set()
    for f in frames:
        values.update(float(v) for v in f["temperature"].dropna().unique())
    return sorted(values)


def _series_present(table: pd.DataFrame, s: Series | None) -> bool:
    """Whether the run has the recipe a series needs (the paper's plain runs always count)."""
    if s is None or "→" not in s.role or (s.recipe == PAPER and s.direction is None):
        return True
    if "recipe_name" not in table:
        return False
    sel = table["recipe_name"] == s.recipe
    if s.direction is not None:
        sel &= table["kd_direction"] == s.direction
    return bool(sel.any())


def _present(table: pd.DataFrame, comp: Comparison) -> bool:
    """Whether the run has the recipes a comparison needs; one choosing among recipes
    (``candidates``) needs one beyond the paper's."""
    if comp.candidates:
        return any(s.recipe != PAPER and _series_present(table, s) for s in comp.candidates)
    return _series_present(table, comp.a) and _series_present(table, comp.b)


def _row_records(table: pd.DataFrame, row: dict, claims: tuple[Claim, ...] = CLAIMS,
                 comparisons: tuple[Comparison, ...] = COMPARISONS) -> list[dict]:
    claim_of = {c.name: None for c in comparisons}
    claim_of.update({comp.name: claim.id for claim in claims for comp in claim.comparisons})
    name = row["name"]
    base = {k: row[k] for k in ("dataset", "symmetry", "teacher", "teacher_prime", "student")}
    base["row"] = name
    frames = {}

    def frame(series):
        if series not in frames:
            frames[series] = select(table, row, series)
        return frames[series]

    def values(series, metric, temperature=None, choose=None):
        f = frame(series)
        f = f if temperature is None else at(f, temperature)
        lam = math.nan
        if choose is not None:
            f, lam = best_variant(f, choose)
        what = f"{name}: {series.role} {series.recipe}" + ("" if temperature is None else f" T={temperature:g}")
        return per_fold(f, metric, what), lam

    def record(comp: Comparison, st: dict, temperature=math.nan, best=math.nan, lam=math.nan) -> dict:
        threshold = comp.threshold(st) if comp.rule else math.nan
        p_holds, p_fails = p_values(st, threshold, comp.rule) \
            if comp.rule not in (None, "max_at_most") else (math.nan, math.nan)
        why = undecided(st) if comp.rule not in (None, "max_at_most") else None
        return {
            **base, "comparison": comp.name, "claim": claim_of[comp.name], "temperature": temperature,
            "best_temperature": best, "best_lambda": lam, "a": comp.a.label,
            "b": comp.b.label if comp.b else "0", **st, "threshold": threshold, "rule": comp.rule,
            "p_holds": p_holds, "p_fails": p_fails, "undecided": why, "verdict": None,
            "claim_verdict_at_t": None, "claim_verdict": None,
        }

    out = []
    comparisons = [c for c in comparisons if _present(table, c)]
    for comp in (c for c in comparisons if c.when == "once"):
        b = values(comp.b, comp.metric)[0] if comp.b else None
        out.append(record(comp, paired_stats(values(comp.a, comp.metric)[0], b)))
    per_t = [c for c in comparisons if c.when == "per_temperature"]
    used = {s for c in per_t for s in (c.a, c.b) if s is not None}
    for temp in _temperatures(frame(s) for s in used):
        for comp in per_t:
            a, lam = values(comp.a, comp.metric, temp if "→" in comp.a.role else None, comp.choose)
            b = values(comp.b, comp.metric, temp if "→" in comp.b.role else None)[0]
            out.append(record(comp, paired_stats(a, b), temperature=temp, lam=lam))
    for comp in (c for c in comparisons if c.when == "best_temperature"):
        best = best_temperature(frame(comp.a))
        a = pd.Series(dtype=float) if math.isnan(best) else values(comp.a, comp.metric, best)[0]
        b = values(comp.b, comp.metric, None if "→" not in comp.b.role else best)[0]
        out.append(record(comp, paired_stats(a, b), best=best))
    for comp in (c for c in comparisons if c.when == "best_recipe"):
        chosen = best_candidate([(s, frame(s)) for s in comp.candidates])
        if chosen is None:
            a, best, lam, label = pd.Series(dtype=float), math.nan, math.nan, comp.a.label
        else:
            series, best, lam, rows = chosen
            a = per_fold(rows, comp.metric, f"{name}: {series.role} {series.recipe} T={best:g}")
            label = series.label
        b = values(comp.b, comp.metric)[0]
        out.append({**record(comp, paired_stats(a, b), best=best, lam=lam), "a": label})
    return _decide(out, claims)


def _measure_records(table: pd.DataFrame, row: dict) -> list[dict]:
    """Claims (b) and (c) decided again under each other measure of invariance the row has
    (:func:`kdinv.analysis.claims.measure_columns`): rows whose claim is ``b@<measure>``."""
    alt = tuple(under_measure(claim, column) for claim in CLAIMS if claim.id in MEASURE_CHECKED
                for column, _ in measure_columns(table, row)[1:])
    if not alt:
        return []
    return _row_records(table, row, alt, tuple(c for claim in alt for c in claim.comparisons))


def _decide(records: list[dict], claims: tuple[Claim, ...] = CLAIMS) -> list[dict]:
    """Each claim's verdicts on one row's records: per comparison and temperature, corrected over
    the claim's tests (:meth:`kdinv.analysis.claims.Claim.decide`); then the claim's verdict at each
    temperature and its summary over the row."""
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    for claim in claims:
        mine = frame.index[frame["claim"] == claim.id]
        if mine.empty:
            continue
        frame.loc[mine, "verdict"] = pd.Series(claim.decide(frame.loc[mine]), index=mine, dtype=object)
        items = frame.loc[mine]
        frame.loc[mine, "claim_verdict"] = claim.verdict(items)
        for idx, r in items.iterrows():
            same_t = items[items["temperature"].isna()] if pd.isna(r["temperature"]) else \
                items[np.isclose(items["temperature"], r["temperature"])]
            frame.loc[idx, "claim_verdict_at_t"] = claim.verdict(same_t)
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def findings_table(table: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """The tidy table of paired comparisons per row and temperature (see the module docstring)."""
    records = [r for row in rows for r in _row_records(table, row) + _measure_records(table, row)]
    out = pd.DataFrame.from_records(records, columns=COLUMNS)
    out["n_folds"] = out["n_folds"].astype("int64")
    for col in ("temperature", "best_temperature", "best_lambda", "mean_a", "mean_b", "max_a", "mean_diff",
                "sd_diff", "ci_low", "ci_high", "ci90_low", "ci90_high", "threshold", "p_holds", "p_fails"):
        out[col] = out[col].astype(float)
    return out


# --------------------------------------------------------------------------------------- verdicts
def _row_verdicts(f: pd.DataFrame, row: dict) -> list[tuple[str, str, str]]:
    out = []
    for claim in CLAIMS:
        names = [c.name for c in claim.comparisons]
        items = f[f["comparison"].isin(names)].sort_values("temperature")
        if items.empty and claim.id not in PAPER_CLAIMS:
            continue  # a claim about a recipe this run did not use
        verdict = claim.verdict(items)
        out.append((claim.title, verdict,
                    claim.sentence(items, row, verdict) + _at_each_t(items) + _other_measures(f, claim, verdict)))
    return out


def _other_measures(f: pd.DataFrame, claim: Claim, verdict: str) -> str:
    """For (b) and (c): the claim's verdict under the other measures of invariance, and whether
    they agree with IM's."""
    alt = f[f["claim"].astype(str).str.startswith(f"{claim.id}@")] if "claim" in f else f.iloc[:0]
    if alt.empty:
        return ""
    names = {"lie": "the Lie derivative"}
    parts, differ = [], []
    for cid, items in alt.groupby("claim", sort=True):
        measure = cid.split("@", 1)[1]
        name = names.get(measure, f"the orbit gap ({measure[len('orbit_gap_'):]})")
        v = items["claim_verdict"].iloc[0]
        parts.append(f"under {name} it {'is ' if v == UNSURE else ''}{v}")
        if v != verdict:
            differ.append(name)
    verb = "disagrees" if len(differ) == 1 else "disagree"
    agree = f"not the verdict under IM: {' and '.join(differ)} {verb}" if differ else "the same verdict as under IM"
    return f" The same comparison under the other measures of invariance: {'; '.join(parts)} ({agree})."


def _at_each_t(items: pd.DataFrame) -> str:
    """The claim's verdict at each temperature, where it is decided at more than one."""
    per_t = items.dropna(subset=["temperature"]).drop_duplicates("temperature")
    if len(per_t) < 2:
        return ""
    return " At each temperature: " + "; ".join(
        f"T={r['temperature']:g} {r['claim_verdict_at_t']}" for _, r in per_t.iterrows()) + "."


def verdicts(findings: pd.DataFrame, rows: list[dict]) -> dict[str, list[tuple[str, str, str]]]:
    """Per row name: [(claim, verdict, sentence)] for each claim of :data:`CLAIMS`, from the numbers."""
    return {row["name"]: _row_verdicts(findings[findings["row"] == row["name"]], row) for row in rows}


# --------------------------------------------------------------------------------------- markdown
def _cell(r) -> str:
    if r is None:
        return "–"
    mark = {HOLDS: " ✓", FAILS: " ✗", UNSURE: " ?"}.get(r["verdict"], "")
    return interval(r) + mark


def to_markdown(findings: pd.DataFrame, verdicts: dict) -> str:
    """Per row: the teacher's IM, a table of the paired differences per T, and the verdicts."""
    lines = [
        "# Findings: does this run reproduce the paper's claims?",
        "",
        ("Differences are means over folds paired by fold, with the 95 % t-interval over folds "
        "in brackets. ✓ the claim tested by the column holds at that T, ✗ it does not, ? "
        "inconclusive: t-tests at 5 % (for (b) and (f) the equivalence and non-inferiority tests "
        "of the 90 % interval), corrected with Holm's procedure over a claim's temperatures, and "
        "no test with fewer than 3 paired folds or identical differences (sd = 0). The rules are "
        "in `kdinv/analysis/claims.py` (one object per claim) and in docs/method.md."),
        "",
        ("The folds share training data (each pair of folds trains on overlapping parts of the "
        "training split) and the teacher of a fold is reused by every student of that fold, so the "
        "fold-paired t-intervals are approximate: they treat the folds as independent."),
        "",
    ]
    columns = [
        ("im_kd_minus_self", "IM(t→s) − IM(s→s)"),
        ("im_kd_minus_aug", "IM(t→s) − IM(s_aug)"),
        ("agreement_kd_minus_control", "agr(t→s) − agr(t'→s' vs t)"),
        ("accuracy_kd_minus_alone", "acc(t→s) − acc(s)"),
    ]
    recipe_columns = [
        ("im_augmented_kd_minus_aug", "IM(t→s, aug.) − IM(s_aug)"),
        ("accuracy_augmented_kd_minus_aug", "acc(t→s, aug.) − acc(s_aug)"),
        ("im_augmented_kd_minus_self", "IM(t→s, aug.) − IM(s→s, aug.)"),
        ("im_consistency_minus_plain", "IM(t→s, cons.) − IM(t→s)"),
        ("accuracy_reverse_minus_forward", "acc(reverse) − acc(forward)"),
    ]
    present = set(findings["comparison"])
    columns += [c for c in recipe_columns if c[0] in present]
    for name, items in verdicts.items():
        f = findings[findings["row"] == name]
        lines.append(f"## {name}")
        lines.append("")
        if not f.empty:
            r0 = f.iloc[0]
            lines.append(f"{r0['dataset']}, {r0['symmetry']}: t = {r0['teacher']}, "
                         f"t' = {r0['teacher_prime']}, s = {r0['student']}.")
            te = f[f["comparison"] == "teacher_im"]
            if not te.empty and te.iloc[0]["n_folds"] > 0:
                t = te.iloc[0]
                lines.append(f"Teacher IM: mean {fmt(t['mean_a'])}, max {fmt(t['max_a'])} "
                             f"({t['n_folds']} folds).")
            best = f[f["comparison"] == "im_kd_best_minus_aug"]
            best_t = best.iloc[0]["best_temperature"] if not best.empty else math.nan
            lines.append("")
            lines.append("| T | " + " | ".join(label for _, label in columns) + " | k |")
            lines.append("|---|" + "---|" * len(columns) + "---|")
            temps = sorted(f["temperature"].dropna().unique())
            for temp in temps:
                at = f[np.isclose(f["temperature"], temp)]
                cells = []
                for comp, _ in columns:
                    sel = at[at["comparison"] == comp]
                    cells.append(_cell(sel.iloc[0] if not sel.empty else None))
                label = f"{temp:g}" + (" (best)" if np.isfinite(best_t) and np.isclose(temp, best_t) else "")
                k = int(at["n_folds"].max()) if not at.empty else 0
                lines.append(f"| {label} | " + " | ".join(cells) + f" | {k} |")
            if not best.empty:
                b = best.iloc[0]
                lines.append("")
                lines.append(f"Best KD student (best T on validation IM): T = {fmt(b['best_temperature'])}; "
                             f"IM(t→s) − IM(s_aug) = {_cell(b)}.")
            recipe = f[f["comparison"] == "im_kd_best_recipe_minus_aug"]
            if not recipe.empty and recipe.iloc[0]["n_folds"] > 0:
                b = recipe.iloc[0]
                lam = f", λ = {fmt(b['best_lambda'])}" if np.isfinite(b["best_lambda"]) else ""
                lines.append("")
                lines.append(f"Best KD recipe (on validation IM): {b['a']} at T = {fmt(b['best_temperature'])}{lam}; "
                             f"IM(best) − IM(s_aug) = {_cell(b)}.")
        lines.append("")
        for claim, verdict, sentence in items:
            lines.append(f"- **{claim}: {verdict}.** {sentence}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


HTML_COLUMNS = ["comparison", "temperature", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "n_folds",
                "p_holds", "p_fails", "verdict", "claim_verdict_at_t"]


def to_html(findings: pd.DataFrame, verdicts_by_row: dict) -> str:
    """A self-contained HTML page: per row, the verdict sentences and its comparisons."""
    import html

    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>Findings</title>',
        ("<style>body{font-family:sans-serif;max-width:70em;margin:auto}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px}"
        "</style></head><body>"),
        '<h1 id="findings">Findings: do the paper\'s claims hold on this run?</h1>',
        ("<p>Differences are fold-paired means with 95 % t-intervals; verdicts come from t-tests at "
        "5 %, Holm-corrected over a claim's temperatures (docs/method.md). The folds share training data "
        "and each fold's teacher serves all its students, so the intervals are approximate: they "
        "treat the folds as independent.</p>"),
    ]
    for name, claims in verdicts_by_row.items():
        parts.append(f'<h2 class="row">{html.escape(str(name))}</h2><ul>')
        for claim, verdict, sentence in claims:
            parts.append(
                f'<li><b>{html.escape(str(claim))}: <span class="verdict">{html.escape(str(verdict))}</span>.</b> '
                f"{html.escape(str(sentence))}</li>"
            )
        parts.append("</ul>")
        mine = findings[findings["row"] == name]
        columns = [c for c in HTML_COLUMNS if c in mine]
        parts.append(mine[columns].to_html(index=False, float_format=lambda v: f"{v:.4g}", classes="findings"))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_findings(metrics_path, rows: list[dict], out_parquet, out_markdown, out_html=None) -> pd.DataFrame:
    """Read the metric table, write the findings (parquet) and their Markdown (and HTML) report."""
    table = pd.read_parquet(metrics_path)
    findings = findings_table(table, rows)
    out_parquet, out_markdown = Path(out_parquet), Path(out_markdown)
    out_parquet.parent.mkdir(parents=True, exist_ok=True)
    out_markdown.parent.mkdir(parents=True, exist_ok=True)
    findings.to_parquet(out_parquet, index=False)
    decided = verdicts(findings, rows)
    out_markdown.write_text(to_markdown(findings, decided), encoding="utf-8")
    if out_html is not None:
        Path(out_html).write_text(to_html(findings, decided), encoding="utf-8")
    log.info("%d comparisons written", len(findings))
    return findings
