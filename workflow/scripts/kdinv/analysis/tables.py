"""The collected metric table: concatenation with checks, so a broken run never reaches a figure."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from kdinv.paths import RUN_COLUMNS

log = logging.getLogger(__name__)

METRICS = ["accuracy", "nll", "ece", "im", "agreement", "kl"]
FIDELITY = ["agreement", "kl"]
# Valid range of each metric: fractions in [0, 1]; NLL and KL >= 0; IM is a distance between two
# probability vectors, so it lies in [0, sqrt(2)].
RANGES = {
    "accuracy": (0.0, 1.0),
    "ece": (0.0, 1.0),
    "agreement": (0.0, 1.0),
    "nll": (0.0, math.inf),
    "kl": (-1e-9, math.inf),
    "im": (0.0, math.sqrt(2) + 1e-9),
}


class MetricTableError(ValueError):
    """A per-model metric table is unusable; the message names the file."""


def check_table(table: pd.DataFrame, source: str) -> None:
    """Raise MetricTableError naming ``source`` if a metric is missing, non-finite or out of range."""
    missing = [c for c in METRICS + ["dataset", "fold", "kind", "model"] if c not in table]
    if missing:
        raise MetricTableError(f"{source}: columns {missing} are missing")
    if table.empty:
        raise MetricTableError(f"{source}: the table has no rows")
    for col in METRICS:
        values = table[col]
        required = table["kind"] == "distill" if col in FIDELITY else pd.Series(True, index=table.index)
        if values[required].isna().any():
            raise MetricTableError(f"{source}: {col} is NaN")
        lo, hi = RANGES[col]
        present = values.dropna()
        bad = present[(present < lo) | (present > hi) | present.isin([math.inf, -math.inf])]
        if not bad.empty:
            raise MetricTableError(f"{source}: {col} = {bad.iloc[0]!r} is outside [{lo}, {hi}]")


def collect_metrics(paths: list[str | Path], out: str | Path) -> pd.DataFrame:
    """Concatenate per-model tables (checked one by one) into ``out`` (parquet, written atomically)."""
    tables = []
    for path in paths:
        table = pd.read_parquet(path)
        check_table(table, str(path))
        tables.append(table)
    result = pd.concat(tables, ignore_index=True)
    out = Path(out)
    tmp = out.with_suffix(".tmp.parquet")
    result.to_parquet(tmp, index=False)
    tmp.replace(out)
    log.info("collected %d rows from %d files", len(result), len(tables))
    return result


RUN_KEYS = [*RUN_COLUMNS, "reference"]


def row_summary(table: pd.DataFrame, row: dict) -> pd.DataFrame:
    """Every model of one figure row (trained, and distilled per temperature and reference) with
    the mean and standard deviation (ddof = 1) over folds of each metric, and the fold count."""
    models = {row["teacher"], row["teacher_prime"], row["student"]}
    mine = table[
        (table["dataset"] == row["dataset"])
        & (table["symmetry"] == row["symmetry"])
        & table["model"].isin(models)
        & ((table["kind"] == "train") | table["teacher"].isin(models))
    ]
    keys = [k for k in RUN_KEYS if k in mine]
    grouped = mine.groupby(keys, dropna=False)
    summary = grouped[METRICS].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary["folds"] = grouped["fold"].nunique()
    return summary.reset_index()


def write_row_tables(metrics_path: str | Path, rows: list[dict], out_dir: str | Path) -> list[Path]:
    """One CSV per row, ``<out_dir>/<row name>.csv``."""
    table = pd.read_parquet(metrics_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for row in rows:
        path = out_dir / f"{row['name']}.csv"
        row_summary(table, row).to_csv(path, index=False, float_format="%.6g")
        paths.append(path)
    log.info("wrote %s", ", ".join(map(str, paths)))
    return paths
