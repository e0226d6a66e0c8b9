"""Training curves: the per-epoch history every checkpoint keeps, as a table and a figure.

A checkpoint's identity comes from its path, read with the workflow's path grammar
(:mod:`kdinv.paths`), and is checked against the ``wildcards`` stored in the file, so a moved or
renamed checkpoint is caught.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path, PurePath

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from kdinv.io import load_tensors
from kdinv.paths import ID_COLUMNS, RUN_KINDS, parse_run_dir, run_label

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds"]
COLUMNS = ["run", *ID_COLUMNS, *HISTORY_COLUMNS, "best_epoch", "is_best", "path"]


def parse_model_path(path: str | Path) -> dict:
    """The identifiers of a checkpoint from its path, ``<run folder>/model.pt`` (see
    :mod:`kdinv.paths`); ValueError if the path follows no run folder's template."""
    if PurePath(path).name != "model.pt":
        raise ValueError(f"{path}: not a <run folder>/model.pt checkpoint path")
    return parse_run_dir(PurePath(path).parent)


def _check_wildcards(path, ids: dict, stored: dict) -> None:
    for f in RUN_KINDS[ids["kind"]].fields:
        if f.wildcard not in stored:
            continue
        have, want = f.parse(str(stored[f.wildcard])), ids[f.name]
        same = math.isclose(have, want) if isinstance(want, float) else have == want
        if not same:
            raise ValueError(f"{path}: the path says {f.wildcard} = {want!r}, the checkpoint {have!r}")


def curves_table(model_files: list[str | Path]) -> pd.DataFrame:
    """One row per checkpoint and epoch: the path's identifiers, the history, the best epoch."""
    frames = []
    for path in model_files:
        ids = parse_model_path(path)
        ckpt = load_tensors(path, mmap=True)
        if "history" not in ckpt:
            raise ValueError(f"{path}: the checkpoint has no training history")
        _check_wildcards(path, ids, ckpt.get("wildcards") or {})
        history = pd.DataFrame.from_records(list(ckpt["history"]))
        if history.empty:
            continue
        for col in HISTORY_COLUMNS:
            if col not in history:
                history[col] = math.nan
        history = history[HISTORY_COLUMNS].astype({"epoch": "int64"})
        best = ckpt.get("best_epoch")
        if best is None:  # the best-validation epoch, as the trainer keeps it
            best = int(history.loc[history["val_accuracy"].idxmax(), "epoch"])
        for key, val in ids.items():
            history[key] = val
        history["run"] = run_label(ids)
        history["best_epoch"] = int(best)
        history["is_best"] = history["epoch"] == int(best)
        history["path"] = str(path)
        frames.append(history)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    out = pd.concat(frames, ignore_index=True)[COLUMNS]
    out["temperature"] = out["temperature"].astype(float)
    out = out.sort_values(["dataset", "kind", "run", "fold", "epoch"], kind="stable")
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------------------ figure
PANELS = {
    "train": [("train_loss", "training: train loss"), ("val_accuracy", "training: val. accuracy")],
    "distill": [("train_loss", "distillation: KD loss"), ("val_accuracy", "distillation: val. accuracy")],
}


def _groups(curves: pd.DataFrame) -> pd.Series:
    """The colour group of each row: the run for trainings, "teacher[ (augment)] → student" for
    distillations (all temperatures of a pair share a colour)."""
    teacher = curves["teacher"].astype(object).where(
        curves["teacher_augment"] == "plain",
        curves["teacher"].astype(str) + " (" + curves["teacher_augment"].astype(str) + ")",
    )
    pair = teacher.astype(str) + " → " + curves["model"].astype(str)
    return curves["run"].where(curves["kind"] == "train", pair)


def _shade(colour, rank: int, n: int):
    """``colour`` mixed with white: the highest temperature is the full colour, lower ones lighter."""
    mix = 0.0 if n <= 1 else 0.6 * (n - 1 - rank) / (n - 1)
    return tuple(c + (1.0 - c) * mix for c in colour)


def plot_curves(curves: pd.DataFrame, out_png, out_pdf) -> None:
    """Per dataset a row of panels: train loss (log y) and validation accuracy of the trained
    models, then the same for the distillations (if any). One line per run and fold (folds
    alternate solid / dashed), the best-validation epoch marked with a dot. Trained models have a
    colour each; distillations a colour per teacher → student pair, lighter for lower T."""
    if curves.empty:
        raise ValueError("no training curves to plot")
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.85)
    curves = curves.copy()
    curves["group"] = _groups(curves)
    datasets = sorted(curves["dataset"].unique())
    kinds = [k for k in ("train", "distill") if (curves["kind"] == k).any()]
    fig, axes = plt.subplots(len(datasets), 2 * len(kinds), figsize=(4.6 * 2 * len(kinds), 2.8 * len(datasets)),
                             squeeze=False, layout="constrained")
    temps = sorted(curves["temperature"].dropna().unique())
    for r, dataset in enumerate(datasets):
        data = curves[curves["dataset"] == dataset]
        for h, kind in enumerate(kinds):
            frame = data[data["kind"] == kind]
            groups = list(dict.fromkeys(frame["group"]))
            palette = dict(zip(groups, sns.color_palette("tab10" if len(groups) <= 10 else "husl",
                                                           max(len(groups), 1))))
            for c, (metric, title) in enumerate(PANELS[kind]):
                ax = axes[r, 2 * h + c]
                ax.set_title(f"{dataset}: {title}", fontsize=8)
                if frame.empty:
                    ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
                    ax.set_axis_off()
                    continue
                for (group, temp, fold), g in frame.groupby(["group", "temperature", "fold"],
                                                            sort=False, dropna=False):
                    g = g.sort_values("epoch")
                    rank = temps.index(temp) if temp in temps else len(temps) - 1
                    colour = _shade(palette[group], rank, len(temps)) if kind == "distill" else palette[group]
                    ax.plot(g["epoch"], g[metric], color=colour, lw=1.0 if kind == "distill" else 1.3,
                            alpha=0.85, ls="-" if fold % 2 == 0 else "--")
                    best = g[g["is_best"]]
                    ax.plot(best["epoch"], best[metric], "o", ms=2.5, color=colour)
                if metric == "train_loss" and (frame[metric].dropna() > 0).all():
                    ax.set_yscale("log")
                ax.set_xlabel("epoch")
                ax.set_ylabel("loss" if metric == "train_loss" else "accuracy")
            if groups:
                handles = [plt.Line2D([], [], color=palette[g], lw=1.6) for g in groups]
                labels = list(groups)
                if kind == "distill" and len(temps) > 1:
                    handles.append(plt.Line2D([], [], color="none"))
                    labels.append("lighter: lower T (" + ", ".join(f"{t:g}" for t in temps) + ")")
                axes[r, 2 * h + 1].legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5),
                                          fontsize=6, frameon=False, handlelength=1.5)
    fig.suptitle("Training curves (solid: even folds, dashed: odd folds; dot: best epoch)")
    fig.savefig(out_png, dpi=150)
    fig.set_layout_engine("none")  # keep the layout just computed: the PDF needs no second pass
    fig.savefig(out_pdf)
    plt.close(fig)


def write_curves(checkpoints: list[str | Path], out_table, out_png, out_pdf) -> pd.DataFrame:
    """Rule plot_curves: the per-epoch histories of ``checkpoints`` as a table (parquet,
    written atomically) and a figure."""
    curves = curves_table(checkpoints)
    tmp = Path(out_table).with_suffix(".tmp.parquet")
    curves.to_parquet(tmp, index=False)
    tmp.replace(out_table)
    plot_curves(curves, out_png, out_pdf)
    log.info("%d epochs of %d runs", len(curves), curves["run"].nunique())
    return curves
