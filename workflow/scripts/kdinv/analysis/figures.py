"""The paper's Figure 1: a row per teacher-student pair, a column per metric, temperature on x.

Dashed horizontal lines: the student trained alone (s), on transformed data (s + symmetry) and the
teacher (t). Solid lines: the distillations s→s (self), s_aug→s (self from the augmented
student), t→s, and s' (distilled from t') measured against t (the fidelity control of paper §3.4;
its accuracy, NLL, ECE and IM are its own). Points and bands are the mean ± standard deviation
(ddof = 1) over folds. Drawn from the collected metric table only.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from kdinv.analysis.claims import Series, select
from kdinv.distill.recipes import PAPER

COLUMNS = [
    ("accuracy", "Accuracy"),
    ("nll", "NLL"),
    ("ece", "ECE"),
    ("im", "IM"),
    ("agreement", "Top-1 agreement"),
    ("kl", "KL(t ‖ s)"),
]


def _mean_sd(values: pd.Series) -> tuple[float, float]:
    return values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0


def row_series(table: pd.DataFrame, row: dict) -> tuple[dict, dict]:
    """The dashed (per-model) and solid (per-temperature) series of one figure row, the paper's
    runs only (recipe ``plain``; the recipes are in :func:`plot_tradeoff`).

    Returns ({label: rows of the table}, {label: rows of the table}); each frame has one row per
    fold (and per temperature for the solid ones).
    """
    # Keys are the roles, the same in every row, so one legend serves the figure; the models of a
    # row are named on its y label.
    dashed = {label: select(table, row, Series(role, label)) for label, role in DASHED.items()}
    solid = {label: select(table, row, Series(role, label, reference=ref))
             for label, (role, ref) in SOLID.items()}  # fmt: skip
    return dashed, solid


DASHED = {"s": "s", "s augmented": "s_aug", "t": "t"}
SOLID = {"s → s (self)": ("s→s", "own"), "s aug. → s": ("s_aug→s", "own"), "t → s": ("t→s", "own"),
         "t' → s' (vs t)": ("t'→s'", "teacher")}  # fmt: skip


def row_title(row: dict) -> str:
    """The y label of a figure row: its name, and t (t') → s with the models' labels."""
    lab = row.get("labels", {})
    t, tp, s = (lab.get(row[k], row[k]) for k in ("teacher", "teacher_prime", "student"))
    return f"{row['name']}\n{t} ({tp}) → {s}\n{row['symmetry']}"


def plot_figure1(metrics_path, rows: list[dict], temperatures: list[float], out_png, out_pdf) -> None:
    table = pd.read_parquet(metrics_path)
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)
    palette = sns.color_palette("colorblind", 10)
    solid_colours = [palette[i] for i in (3, 4, 9, 7)]
    markers = ["o", "s", "^", "D"]
    height = 2.0 * len(rows) + 0.8
    fig, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(2.3 * len(COLUMNS), height), squeeze=False)
    handles = {}
    for r, row in enumerate(rows):
        dashed, solid = row_series(table, row)
        for c, (metric, title) in enumerate(COLUMNS):
            ax = axes[r, c]
            for i, (label, frame) in enumerate(dashed.items()):
                values = frame[metric].dropna()
                if values.empty:
                    continue
                mean, sd = _mean_sd(values)
                line = ax.axhline(mean, ls="--", lw=1.2, color=palette[i])
                ax.axhspan(mean - sd, mean + sd, color=palette[i], alpha=0.12, lw=0)
                handles[label] = line
            for i, (label, frame) in enumerate(solid.items()):
                stats = frame.groupby("temperature")[metric].agg(["mean", "std", "count"]).dropna(subset=["mean"])
                if stats.empty:
                    continue
                container = ax.errorbar(
                    stats.index, stats["mean"], yerr=stats["std"].fillna(0.0), marker=markers[i],
                    ms=3, lw=1.3, capsize=2, color=solid_colours[i],
                )
                handles[label] = container
            ax.set_xscale("log", base=2)
            ax.set_xticks(temperatures)
            ax.set_xticklabels([f"{t:g}" for t in temperatures])
            ax.minorticks_off()
            if r == 0:
                ax.set_title(title)
            if r == len(rows) - 1:
                ax.set_xlabel("Temperature T")
            if c == 0:
                ax.set_ylabel(row_title(row), fontsize=7)
    fig.legend(
        list(handles.values()), list(handles.keys()), loc="lower center", ncol=min(len(handles), 7),
        frameon=False, bbox_to_anchor=(0.5, 0.0),
    )
    fig.suptitle("Knowledge distillation of symmetry invariances (mean ± s.d. over folds)", y=0.995)
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1 - 0.25 / height))
    fig.savefig(out_png, dpi=200)
    fig.savefig(out_pdf)
    plt.close(fig)


ROLE_MARKERS = {"s→s": "o", "s_aug→s": "s", "t→s": "^", "t'→s'": "v"}
BASELINES = {"t": ("*", "t"), "t'": ("P", "t'"), "s": ("X", "s"), "s_aug": ("D", "s augmented")}


def _mean_sd_xy(frame: pd.DataFrame) -> tuple[float, float, float, float]:
    mx, sx = _mean_sd(frame["im"])
    my, sy = _mean_sd(frame["accuracy"])
    return mx, sx, my, sy


def plot_tradeoff(metrics_path, rows: list[dict], out_png, out_pdf) -> None:
    """Per row, invariance (IM, x) against accuracy (y): one marker per model, recipe variant and
    temperature (mean ± s.d. over folds on both axes), the teacher and the paper's baselines (s, s
    augmented, t, t') in black. Colour: the recipe variant; marker: the distillation's role;
    lighter: lower temperature. Drawn from the collected metric table only."""
    table = pd.read_parquet(metrics_path)
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)
    if "recipe" not in table:
        table = table.assign(recipe=table["kind"].map({"distill": PAPER}))
    variants = [v for v in dict.fromkeys(table["recipe"].dropna()) if v is not None]
    variants = [PAPER] + sorted(v for v in variants if v != PAPER)
    colours = dict(zip(variants, sns.color_palette("tab10" if len(variants) <= 10 else "husl", len(variants))))
    temps = sorted(table["temperature"].dropna().unique())
    cols = min(len(rows), 3)
    nrows = -(-len(rows) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows + 0.9), squeeze=False)
    handles = {}
    for i, row in enumerate(rows):
        ax = axes[i // cols, i % cols]
        for role, (marker, label) in BASELINES.items():
            frame = select(table, row, Series(role, label))
            if frame.empty:
                continue
            mx, sx, my, sy = _mean_sd_xy(frame)
            h = ax.errorbar(mx, my, xerr=sx, yerr=sy, fmt=marker, color="black", ms=7, capsize=2, zorder=3)
            handles[label] = h
        for variant in variants:
            for role, marker in ROLE_MARKERS.items():
                frame = select(table, row, Series(role, role, variant=variant))
                for rank, temp in enumerate(temps):
                    at_t = frame[frame["temperature"] == temp]
                    if at_t.empty:
                        continue
                    mx, sx, my, sy = _mean_sd_xy(at_t)
                    mix = 0.0 if len(temps) <= 1 else 0.55 * (len(temps) - 1 - rank) / (len(temps) - 1)
                    colour = tuple(c + (1 - c) * mix for c in colours[variant])
                    ax.errorbar(mx, my, xerr=sx, yerr=sy, fmt=marker, color=colour, ms=5, capsize=1.5,
                                elinewidth=0.8, alpha=0.9)
                    handles.setdefault(f"recipe: {variant}", plt.Line2D([], [], color=colours[variant], lw=3))
                    handles.setdefault(role, plt.Line2D([], [], marker=marker, color="grey", ls="none"))
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_xlim(left=0)
        ax.set_xlabel("IM (lower: more invariant)")
        ax.set_ylabel("Accuracy")
        ax.set_title(row_title(row).replace("\n", " · "), fontsize=7)
    for j in range(len(rows), nrows * cols):
        axes[j // cols, j % cols].set_axis_off()
    if len(temps) > 1:
        handles["lighter: lower T (" + ", ".join(f"{t:g}" for t in temps) + ")"] = plt.Line2D([], [], color="none")
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=4, frameon=False,
               fontsize=7)
    fig.suptitle("Invariance against accuracy per recipe (mean ± s.d. over folds)")
    fig.tight_layout(rect=(0, 0.9 / (3.4 * nrows + 0.9) + 0.06, 1, 0.97))
    fig.savefig(out_png, dpi=170)
    fig.savefig(out_pdf)
    plt.close(fig)


MEASURE_ROLES = {"s": "s", "s aug.": "s_aug", "t": "t", "s→s": "s→s", "s_aug→s": "s_aug→s", "t→s": "t→s"}


def plot_measures(metrics_path, rows: list[dict], out_png, out_pdf) -> None:
    """Per row (figure rows) and measure (columns: IM, orbit gap, Lie derivative), each model's
    value (filled) beside its random control of the same size (hollow), mean ± s.d. over folds, on
    a log scale: a model is invariant where its value lies far below its control, insensitive
    where both are small. Distilled students at their best temperature on validation IM. Drawn
    from the collected metric table only."""
    from kdinv.analysis.claims import best_temperature, measure_columns

    table = pd.read_parquet(metrics_path)
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)
    cols = 3
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.6 * cols, 2.6 * len(rows) + 0.6), squeeze=False)
    for r, row in enumerate(rows):
        measures = measure_columns(table, row) if "im_random" in table else [("im", "IM")]
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(measures):
                ax.axis("off")
                ax.text(0.5, 0.5, "no finite group or continuous\ngenerator for this row",
                        ha="center", va="center", fontsize=8, transform=ax.transAxes)
                continue
            column, title = measures[c]
            control = "im_random" if column == "im" else f"{column}_random"
            for x, (label, role) in enumerate(MEASURE_ROLES.items()):
                frame = select(table, row, Series(role, label))
                if "temperature" in frame and frame["temperature"].notna().any():
                    frame = frame[frame["temperature"] == best_temperature(frame)]
                for value, offset, face in ((column, -0.15, None), (control, 0.15, "none")):
                    if value not in frame or frame[value].isna().all():
                        continue
                    mean, sd = _mean_sd(frame[value].clip(lower=1e-12))
                    ax.errorbar(x + offset, mean, yerr=sd, fmt="o", color="C0" if value == column else "C3",
                                mfc=face, ms=5, capsize=2)
            ax.set_yscale("log")
            ax.set_xticks(range(len(MEASURE_ROLES)), list(MEASURE_ROLES), rotation=45, fontsize=7)
            ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(row_title(row), fontsize=8)
    handles = [plt.Line2D([], [], marker="o", ls="", color="C0", label="measure"),
               plt.Line2D([], [], marker="o", ls="", color="C3", mfc="none", label="random control, same size")]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / (2.6 * len(rows) + 0.6), 1, 1))
    fig.savefig(out_png, dpi=170)
    fig.savefig(out_pdf)
    plt.close(fig)
