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

Statistics. Two series are paired by ``fold`` (only the folds both have); with k pairs the
difference d = a − b has mean d̄, standard deviation sd (ddof = 1) and the 95 % t-interval
d̄ ± t₀.₉₇₅,ₖ₋₁ · sd/√k. With k < 2 there is no interval (NaN) and every verdict resting on it is
"inconclusive". The folds share the data split, the teacher and the IM copies, so pairing removes
the between-fold variation that the figure's error bars show.

Comparisons (column ``comparison``; ``temperature`` is NaN for the per-row items):

``teacher_im``            IM(t) − 0: the teacher's structural invariance; ``max_a`` is its max.
``im_kd_minus_self``      IM(t→s) − IM(s→s), per T.
``im_kd_minus_aug``       IM(t→s) − IM(s_aug), per T (shown, no verdict of its own).
``im_kd_best_minus_aug``  IM(t→s at the best T) − IM(s_aug); the best T (``best_temperature``) is
                          the one whose mean IM(t→s) over all its folds is lowest (ties: lowest T).
``agreement_kd_minus_control``  agreement(t→s, vs t) − agreement(t'→s', vs t), per T.
``accuracy_kd_minus_alone``     accuracy(t→s) − accuracy(s), per T.

Verdict rules ("holds" / "does not hold" / "inconclusive"); ``threshold`` holds the number each
interval is compared with, on the scale of the difference:

(a) The teacher is invariant (§3.2; DECISIONS "What every teacher must show"): holds when the
    largest teacher IM over folds is ≤ 1e-4, does not hold when it is larger; inconclusive when
    the table has no teacher row. One fold suffices: it is a property of each trained model.
(b) KD does not make the student more invariant than self-distillation does (§4, Fig. 1 column 4:
    "distillation from teacher to student leads to comparable invariance as obtained by performing
    self-distillation"). The margin m_T = ``relative_margin`` (10 %) × mean IM(s→s) at T; the
    threshold is −m_T. Per T: holds when ci_low ≥ −m_T (the improvement IM(s→s) − IM(t→s) is below
    the margin with 95 % confidence), does not hold when ci_high < −m_T (KD is significantly better
    than self-distillation by more than the margin), inconclusive otherwise or with k < 2.
(c) Training on transformed data gives a more invariant student than KD (§4: "the student models
    that perform the best in the invariance metric are the ones that are trained on transformed
    data"), tested against the best KD student: holds when ci_low > 0 for IM(t→s best) − IM(s_aug),
    does not hold when ci_high ≤ 0, inconclusive otherwise or with k < 2.
(d) The students are faithful to their own teacher beyond what generalisation explains (§3.4 control;
    §4 "this is true for high-fidelity students"): per T, holds when ci_low > 0 for agreement(t→s)
    − agreement(t'→s' vs t), does not hold when ci_high ≤ 0, inconclusive otherwise or with k < 2.
(e) KD does not hurt the student's accuracy (the paper, §4, states "generalisation ability of
    students improves"; the direction is reported in the sentence): per T, holds when ci_low ≥
    −``accuracy_margin`` (1 percentage point), does not hold when ci_high < −``accuracy_margin``,
    inconclusive otherwise or with k < 2. A T at which KD is significantly better (ci_low > 0) is
    named in the sentence as an improvement.

The per-T claims (b), (d) and (e) are claims about every temperature, so a row's verdict is "holds"
when the claim holds at every T, "does not hold" when it fails at some T, and "inconclusive"
otherwise (some T inconclusive, none failing).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

TEACHER_IM_MAX = 1e-4
RELATIVE_MARGIN = 0.10
ACCURACY_MARGIN = 0.01

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"

# comparison -> (claim, strict): the claim is "difference > threshold" (strict) or
# "difference >= threshold" (not strict); None: shown without a verdict.
CLAIM_OF = {
    "teacher_im": ("a", None),
    "im_kd_minus_self": ("b", False),
    "im_kd_minus_aug": (None, None),
    "im_kd_best_minus_aug": ("c", True),
    "agreement_kd_minus_control": ("d", True),
    "accuracy_kd_minus_alone": ("e", False),
}

CLAIMS = {
    "a": "(a) the teacher is structurally invariant, IM ≤ 1e-4 (§3.2)",
    "b": "(b) KD does not transfer the invariance beyond self-distillation (§4, Fig. 1 col. 4)",
    "c": "(c) augmentation instils more invariance than the best KD student (§4)",
    "d": "(d) the KD student is faithful to its own teacher beyond the t'→s' control (§3.4, §4)",
    "e": "(e) KD does not hurt the student's accuracy (§4: generalisation improves)",
}

COLUMNS = [
    "row", "dataset", "symmetry", "teacher", "teacher_prime", "student", "comparison", "claim",
    "temperature", "best_temperature", "a", "b", "mean_a", "mean_b", "max_a", "mean_diff", "sd_diff",
    "ci_low", "ci_high", "n_folds", "threshold", "verdict",
]


# --------------------------------------------------------------------------------------- statistics
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


def decide(ci_low: float, ci_high: float, threshold: float, strict: bool, n_folds: int) -> str:
    """Verdict of the claim "difference > threshold" (strict) or ">= threshold" from its interval."""
    if n_folds < 2 or not (np.isfinite(ci_low) and np.isfinite(ci_high)) or not np.isfinite(threshold):
        return UNSURE
    if (ci_low > threshold) if strict else (ci_low >= threshold):
        return HOLDS
    if (ci_high <= threshold) if strict else (ci_high < threshold):
        return FAILS
    return UNSURE


# ------------------------------------------------------------------------------------------- series
def _per_fold(frame: pd.DataFrame, metric: str, what: str) -> pd.Series:
    """``metric`` indexed by fold; a fold present twice means the selection is ambiguous."""
    if frame["fold"].duplicated().any():
        folds = sorted(frame.loc[frame["fold"].duplicated(), "fold"].unique().tolist())
        raise ValueError(f"{what}: folds {folds} appear more than once in the metric table")
    return frame.set_index("fold")[metric].astype(float)


def _series(table: pd.DataFrame, row: dict) -> dict:
    d, sym = row["dataset"], row["symmetry"]
    t, tp, s = row["teacher"], row["teacher_prime"], row["student"]
    df = table[(table["dataset"] == d) & (table["symmetry"] == sym)]
    trained = df[df["kind"] == "train"]
    distilled = df[(df["kind"] == "distill") & (df["model"] == s)]

    def train(model, augment):
        return trained[(trained["model"] == model) & (trained["augment"] == augment)]

    def distill(teacher, augment, reference):
        return distilled[
            (distilled["teacher"] == teacher)
            & (distilled["teacher_augment"] == augment)
            & (distilled["reference"] == reference)
        ]

    return {
        "t": train(t, "plain"),
        "s": train(s, "plain"),
        "s_aug": train(s, sym),
        "s→s": distill(s, "plain", f"{s}/plain"),
        "t→s": distill(t, "plain", f"{t}/plain"),
        "t'→s' vs t": distill(tp, "plain", f"{t}/plain"),
    }


def _at(frame: pd.DataFrame, temperature: float) -> pd.DataFrame:
    return frame[np.isclose(frame["temperature"].astype(float), temperature)]


def _temperatures(*frames: pd.DataFrame) -> list[float]:
    values = set()
    for f in frames:
        values.update(float(v) for v in f["temperature"].dropna().unique())
    return sorted(values)


def findings_table(
    table: pd.DataFrame,
    rows: list[dict],
    relative_margin: float = RELATIVE_MARGIN,
    accuracy_margin: float = ACCURACY_MARGIN,
    teacher_im_max: float = TEACHER_IM_MAX,
) -> pd.DataFrame:
    """The tidy table of paired comparisons per row and temperature (see the module docstring)."""
    records = []
    for row in rows:
        name = row["name"]
        ser = _series(table, row)
        base = {k: row[k] for k in ("dataset", "symmetry", "teacher", "teacher_prime", "student")}
        base["row"] = name

        def add(comparison, a_label, b_label, st, threshold=math.nan, temperature=math.nan,
                best_temperature=math.nan):
            claim, strict = CLAIM_OF[comparison]
            if comparison == "teacher_im":
                if st["n_folds"] == 0:
                    verdict = UNSURE
                else:
                    verdict = HOLDS if st["max_a"] <= threshold else FAILS
            elif claim is None:
                verdict = None
            else:
                verdict = decide(st["ci_low"], st["ci_high"], threshold, strict, st["n_folds"])
            records.append({
                **base, "comparison": comparison, "claim": claim, "temperature": temperature,
                "best_temperature": best_temperature, "a": a_label, "b": b_label, **st,
                "threshold": threshold, "verdict": verdict,
            })

        # (a) the teacher's IM, against exact invariance.
        add("teacher_im", "IM(t)", "0", paired_stats(_per_fold(ser["t"], "im", f"{name}: t")),
            threshold=teacher_im_max)

        kd = ser["t→s"]
        s_aug_im = _per_fold(ser["s_aug"], "im", f"{name}: s_aug")
        for temp in _temperatures(kd, ser["s→s"], ser["t'→s' vs t"]):
            kd_t = _at(kd, temp)
            # (b) IM(t→s) − IM(s→s); threshold −margin × IM(s→s).
            st = paired_stats(_per_fold(kd_t, "im", f"{name}: t→s T={temp:g}"),
                              _per_fold(_at(ser["s→s"], temp), "im", f"{name}: s→s T={temp:g}"))
            add("im_kd_minus_self", "IM(t→s)", "IM(s→s)", st,
                threshold=-relative_margin * st["mean_b"], temperature=temp)
            add("im_kd_minus_aug", "IM(t→s)", "IM(s_aug)",
                paired_stats(_per_fold(kd_t, "im", f"{name}: t→s T={temp:g}"), s_aug_im),
                temperature=temp)
            # (d) fidelity against the control.
            add("agreement_kd_minus_control", "agreement(t→s, vs t)", "agreement(t'→s', vs t)",
                paired_stats(_per_fold(kd_t, "agreement", f"{name}: t→s T={temp:g}"),
                             _per_fold(_at(ser["t'→s' vs t"], temp), "agreement",
                                       f"{name}: t'→s' T={temp:g}")),
                threshold=0.0, temperature=temp)
            # (e) accuracy against the student alone.
            add("accuracy_kd_minus_alone", "accuracy(t→s)", "accuracy(s)",
                paired_stats(_per_fold(kd_t, "accuracy", f"{name}: t→s T={temp:g}"),
                             _per_fold(ser["s"], "accuracy", f"{name}: s")),
                threshold=-accuracy_margin, temperature=temp)

        # (c) the best KD student (lowest mean IM over T) against the augmented student.
        if kd.empty:
            best = math.nan
            st = paired_stats(pd.Series(dtype=float), s_aug_im)
        else:
            means = kd.groupby("temperature")["im"].mean()
            best = float(means.index[means.to_numpy() == means.min()].min())
            st = paired_stats(_per_fold(_at(kd, best), "im", f"{name}: t→s T={best:g}"), s_aug_im)
        add("im_kd_best_minus_aug", "IM(t→s, best T)", "IM(s_aug)", st, threshold=0.0,
            best_temperature=best)

    out = pd.DataFrame.from_records(records, columns=COLUMNS)
    out["n_folds"] = out["n_folds"].astype("int64")
    for col in ("temperature", "best_temperature", "mean_a", "mean_b", "max_a", "mean_diff",
                "sd_diff", "ci_low", "ci_high", "threshold"):
        out[col] = out[col].astype(float)
    return out


# --------------------------------------------------------------------------------------- verdicts
def fmt(x: float) -> str:
    """A number for the text: 3 significant digits, a true minus sign, 'n/a' for NaN."""
    if x is None or not np.isfinite(x):
        return "n/a"
    s = f"{x:.3g}"
    return s.replace("-", "−")


def _interval(r) -> str:
    if r["n_folds"] < 2:
        return f"{fmt(r['mean_diff'])} (k = {r['n_folds']}, no interval)"
    return f"{fmt(r['mean_diff'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"


def _temps(frame: pd.DataFrame) -> str:
    return ", ".join(f"T={t:g}" for t in frame["temperature"])


def _aggregate(items: pd.DataFrame) -> str:
    """Universal claims over T: fails if it fails at some T, holds if it holds at every T."""
    if items.empty:
        return UNSURE
    if (items["verdict"] == FAILS).any():
        return FAILS
    if (items["verdict"] == HOLDS).all():
        return HOLDS
    return UNSURE


def _details(items: pd.DataFrame) -> str:
    return "; ".join(f"T={r['temperature']:g}: {_interval(r)}" for _, r in items.iterrows())


def _row_verdicts(f: pd.DataFrame, row: dict) -> list[tuple[str, str, str]]:
    out = []
    by = {c: f[f["comparison"] == c].sort_values("temperature") for c in CLAIM_OF}
    k_max = int(f["n_folds"].max()) if not f.empty else 0
    few = " (fewer than 2 paired folds)" if k_max < 2 else ""

    # (a)
    te = by["teacher_im"]
    if te.empty or te.iloc[0]["n_folds"] == 0:
        out.append((CLAIMS["a"], UNSURE, "There is no teacher in the metric table."))
    else:
        r = te.iloc[0]
        v = r["verdict"]
        rel = "≤" if v == HOLDS else ">"
        out.append((CLAIMS["a"], v,
                    f"Teacher {row['teacher']}: IM mean {fmt(r['mean_a'])}, max {fmt(r['max_a'])} "
                    f"over {r['n_folds']} fold(s), {rel} {fmt(r['threshold'])}, so the claim {v}."))

    # (b)
    b = by["im_kd_minus_self"]
    v = _aggregate(b)
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
                f"{RELATIVE_MARGIN:.0%} of IM(s→s) at {_temps(b[b['verdict'] == FAILS])}, "
                "so the claim does not hold")
    else:
        lead = ("Inconclusive" + few + ": at " + _temps(b[b["verdict"] != HOLDS])
                + " the 95 % interval of the improvement IM(s→s) − IM(t→s) straddles the margin "
                f"of {RELATIVE_MARGIN:.0%} of IM(s→s)") if not b.empty else "No distillation is in the table"
    out.append((CLAIMS["b"], v, f"{lead} (improvement [95 % CI]: {improvement or 'none'})."))

    # (c)
    c = by["im_kd_best_minus_aug"]
    r = c.iloc[0] if not c.empty else None
    v = r["verdict"] if r is not None else UNSURE
    if r is None or r["n_folds"] == 0:
        text = "The table lacks the augmented student or the t→s distillations."
    else:
        nums = (f"IM(s_aug) {fmt(r['mean_b'])} against IM(t→s) {fmt(r['mean_a'])} at the best "
                f"T={r['best_temperature']:g}; difference {_interval(r)}")
        if v == HOLDS:
            text = f"Augmentation gives the more invariant student, the interval excludes 0 ({nums})."
        elif v == FAILS:
            text = f"The best KD student is at least as invariant as the augmented one ({nums})."
        else:
            text = f"Inconclusive{few}: the interval includes 0 ({nums})."
    out.append((CLAIMS["c"], v, text))

    # (d)
    d = by["agreement_kd_minus_control"]
    v = _aggregate(d)
    if v == HOLDS:
        lead = ("t→s agrees with t more than the control t'→s' does at every temperature, "
                "the intervals exclude 0")
    elif v == FAILS:
        lead = ("The control t'→s' agrees with t at least as much as t→s does at "
                f"{_temps(d[d['verdict'] == FAILS])}, so the fidelity is not specific to the teacher")
    else:
        lead = (f"Inconclusive{few}: at {_temps(d[d['verdict'] != HOLDS])} the interval of the "
                "agreement difference includes 0") if not d.empty else "No distillation is in the table"
    out.append((CLAIMS["d"], v, f"{lead} (agreement(t→s) − agreement(t'→s' vs t) [95 % CI]: "
                                f"{_details(d) or 'none'})."))

    # (e)
    e = by["accuracy_kd_minus_alone"]
    v = _aggregate(e)
    better = e[(e["n_folds"] > 1) & (e["ci_low"] > 0)]
    worse = e[(e["n_folds"] > 1) & (e["ci_high"] < 0)]
    if v == HOLDS:
        lead = (f"KD costs less than {ACCURACY_MARGIN * 100:g} percentage point of accuracy at every "
                "temperature")
    elif v == FAILS:
        lead = (f"KD lowers the accuracy by more than {ACCURACY_MARGIN * 100:g} percentage point at "
                f"{_temps(e[e['verdict'] == FAILS])}")
    else:
        lead = (f"Inconclusive{few}: at {_temps(e[e['verdict'] != HOLDS])} the interval reaches below "
                f"−{ACCURACY_MARGIN * 100:g} percentage point") if not e.empty else "No distillation is in the table"
    direction = []
    if not better.empty:
        direction.append(f"significantly better than s alone at {_temps(better)}")
    if not worse.empty:
        direction.append(f"significantly worse at {_temps(worse)}")
    if not direction and not e.empty:
        direction.append("no significant difference from s alone at any temperature")
    tail = f"; direction: {', '.join(direction)}" if direction else ""
    out.append((CLAIMS["e"], v, f"{lead}{tail} (accuracy(t→s) − accuracy(s) [95 % CI]: "
                                f"{_details(e) or 'none'})."))
    return out


def verdicts(findings: pd.DataFrame, rows: list[dict]) -> dict[str, list[tuple[str, str, str]]]:
    """Per row name: [(claim, verdict, sentence)] for the claims (a) to (e), from the numbers."""
    return {row["name"]: _row_verdicts(findings[findings["row"] == row["name"]], row) for row in rows}


# --------------------------------------------------------------------------------------- markdown
def _cell(r) -> str:
    if r is None:
        return "–"
    mark = {HOLDS: " ✓", FAILS: " ✗", UNSURE: " ?"}.get(r["verdict"], "")
    return _interval(r) + mark


def to_markdown(findings: pd.DataFrame, verdicts: dict) -> str:
    """Per row: the teacher's IM, a table of the paired differences per T, and the verdicts."""
    lines = [
        "# Findings: does this run reproduce the paper's claims?",
        "",
        "Differences are means over folds paired by fold, with the 95 % t-interval over folds "
        "in brackets. ✓ the claim tested by the column holds at that T, ✗ it does not, ? "
        "inconclusive. The rules are in the docstring of `kdinv/analysis/findings.py`.",
        "",
    ]
    columns = [
        ("im_kd_minus_self", "IM(t→s) − IM(s→s)"),
        ("im_kd_minus_aug", "IM(t→s) − IM(s_aug)"),
        ("agreement_kd_minus_control", "agr(t→s) − agr(t'→s' vs t)"),
        ("accuracy_kd_minus_alone", "acc(t→s) − acc(s)"),
    ]
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
                lines.append(f"Best KD student (lowest IM(t→s)): T = {fmt(b['best_temperature'])}; "
                             f"IM(t→s) − IM(s_aug) = {_cell(b)}.")
        lines.append("")
        for claim, verdict, sentence in items:
            lines.append(f"- **{claim}: {verdict}.** {sentence}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


HTML_COLUMNS = ["comparison", "temperature", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "n_folds", "verdict"]


def to_html(findings: pd.DataFrame, verdicts_by_row: dict) -> str:
    """A self-contained HTML page: per row, the verdict sentences and its comparisons."""
    import html

    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>Findings</title>',
        "<style>body{font-family:sans-serif;max-width:70em;margin:auto}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px}"
        "</style></head><body>",
        '<h1 id="findings">Findings: do the paper\'s claims hold on this run?</h1>',
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
    return findings
