"""check_table and collect_metrics: good tables concatenate, a broken one stops the collection."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from kdinv.analysis.tables import METRICS, MetricTableError, check_table, collect_metrics


def table(kind: str = "train", rows: int = 2, **overrides) -> pd.DataFrame:
    """A valid per-model table (one row per symmetry/reference), with column overrides."""
    data = {
        "dataset": ["mnist"] * rows,
        "fold": [0] * rows,
        "kind": [kind] * rows,
        "model": ["mlp"] * rows,
        "augment": ["plain"] * rows,
        "symmetry": [f"sym{i}" for i in range(rows)],
        "reference": [None if kind == "train" else f"teacher/plain{i}" for i in range(rows)],
        "accuracy": [0.9] * rows,
        "nll": [0.3] * rows,
        "ece": [0.05] * rows,
        "im": [0.2] * rows,
        "agreement": [math.nan if kind == "train" else 0.95] * rows,
        "kl": [math.nan if kind == "train" else 0.1] * rows,
        "n_test": [1000] * rows,
    }
    for col, value in overrides.items():
        data[col] = [value] * rows if not isinstance(value, list) else value
    return pd.DataFrame(data)


def write(tmp_path, name: str, frame: pd.DataFrame):
    path = tmp_path / name / "metrics.parquet"
    path.parent.mkdir(parents=True)
    frame.to_parquet(path, index=False)
    return path


def test_good_tables_concatenate(tmp_path):
    frames = [table("train", rows=2), table("distill", rows=3), table("train", rows=1, fold=1)]
    paths = [write(tmp_path, f"run{i}", f) for i, f in enumerate(frames)]
    out = tmp_path / "metrics.parquet"
    result = collect_metrics(paths, out)
    assert len(result) == 2 + 3 + 1
    on_disk = pd.read_parquet(out)
    assert len(on_disk) == 6
    assert list(on_disk["kind"]) == ["train"] * 2 + ["distill"] * 3 + ["train"]
    assert on_disk["agreement"].isna().sum() == 3  # the train rows keep their NaN fidelity
    assert not list(tmp_path.glob("*.tmp*"))


def test_boundary_values_are_accepted():
    good = table("distill", rows=4, accuracy=[0.0, 1.0, 0.5, 0.5], ece=[0.0, 1.0, 0.0, 0.0],
                 im=[0.0, math.sqrt(2), 0.0, 0.0], nll=[0.0, 5.0, 0.0, 0.0],
                 agreement=[0.0, 1.0, 1.0, 1.0], kl=[0.0, 3.0, -1e-12, 0.0])
    check_table(good, "good.parquet")  # no exception


def test_nan_fidelity_is_accepted_on_train_rows(tmp_path):
    path = write(tmp_path, "train_run", table("train"))
    out = tmp_path / "metrics.parquet"
    result = collect_metrics([path], out)
    assert result["agreement"].isna().all() and result["kl"].isna().all()
    assert out.exists()


BAD = [  # (column, kind of the run, the bad value in the middle row)
    ("accuracy", "train", math.nan),
    ("accuracy", "train", 1.5),
    ("accuracy", "distill", -0.1),
    ("ece", "train", 1.2),
    ("nll", "train", -0.5),
    ("nll", "train", math.inf),
    ("im", "train", 1.5),  # > sqrt(2)
    ("im", "distill", math.nan),
    ("agreement", "distill", math.nan),
    ("agreement", "distill", 1.01),
    ("agreement", "train", 2.0),  # present on a train row: still range-checked
    ("kl", "distill", math.nan),
    ("kl", "distill", -0.5),
]


@pytest.mark.parametrize("column, kind, value", BAD, ids=[f"{c}-{k}-{v}" for c, k, v in BAD])
def test_bad_values_are_refused_naming_file_and_column(tmp_path, column, kind, value):
    good = write(tmp_path, "good_run", table("train"))
    frame = table(kind, rows=3)
    frame.loc[1, column] = value
    bad = write(tmp_path, "broken_run", frame)
    out = tmp_path / "metrics.parquet"
    with pytest.raises(MetricTableError) as info:
        collect_metrics([good, bad], out)
    message = str(info.value)
    assert str(bad) in message
    assert re.search(rf"\b{column}\b", message.replace(str(bad), ""))
    assert not out.exists()
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("column", METRICS + ["dataset", "fold", "kind", "model"])
def test_missing_column_is_refused(tmp_path, column):
    bad = write(tmp_path, "broken_run", table("distill").drop(columns=[column]))
    out = tmp_path / "metrics.parquet"
    with pytest.raises(MetricTableError) as info:
        collect_metrics([bad], out)
    message = str(info.value)
    assert str(bad) in message
    assert repr(column) in message.replace(str(bad), "")
    assert not out.exists()


def test_empty_table_is_refused(tmp_path):
    bad = write(tmp_path, "empty_run", table("train").iloc[:0])
    with pytest.raises(MetricTableError, match="empty_run"):
        collect_metrics([bad], tmp_path / "metrics.parquet")
    assert not (tmp_path / "metrics.parquet").exists()


def test_check_table_names_the_source():
    with pytest.raises(MetricTableError, match=r"^some/where\.parquet: accuracy"):
        check_table(table("train", accuracy=math.nan), "some/where.parquet")
