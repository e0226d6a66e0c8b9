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

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

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
    """The dashed (per-model) and solid (per-temperature) series of one figure row.

    Returns ({label: rows of the table}, {label: rows of the table}); each frame has one row per
    fold (and per temperature for the solid ones).
    """
    d, sym = row["dataset"], row["symmetry"]
    t, tp, s = row["teacher"], row["teacher_prime"], row["student"]
    df = table[(table["dataset"] == d) & (table["symmetry"] == sym)]
    trained = df[df["kind"] == "train"]
    distilled = df[df["kind"] == "distill"]

    def trained_run(model, augment):
        return trained[(trained["model"] == model) & (trained["augment"] == augment)]

    def distilled_run(teacher, augment, reference):
        sel = distilled[
            (distilled["model"] == s)
            & (distilled["teacher"] == teacher)
            & (distilled["teacher_augment"] == augment)
        ]
        return sel[sel["reference"] == f"{reference[0]}/{reference[1]}"]

    # Keys are the roles, the same in every row, so one legend serves the figure; the models of a
    # row are named on its y label.
    dashed = {
        "s": trained_run(s, "plain"),
        "s augmented": trained_run(s, sym),
        "t": trained_run(t, "plain"),
    }
    solid = {
        "s → s (self)": distilled_run(s, "plain", (s, "plain")),
        "s aug. → s": distilled_run(s, sym, (s, sym)),
        "t → s": distilled_run(t, "plain", (t, "plain")),
        "t' → s' (vs t)": distilled_run(tp, "plain", (t, "plain")),
    }
    return dashed, solid


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
