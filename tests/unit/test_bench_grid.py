"""benchmarks/run.py's GPU-hour estimate of the whole grid: its job counts are the workflow's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import benchmark_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    return benchmark_module("run")


def epoch_rows(config, seconds):
    """The epochs table's lines as run.py builds them: one per (row, model, case), both paths."""
    rows = []
    for row in config["rows"]:
        for model, case in [(row["teacher"], "train"), (row["teacher_prime"], "train"),
                            (row["student"], "train"), (row["student"], "distill")]:
            block = config["models"][model]["distillation" if case == "distill" else "training"]
            for path in ("project", "naive"):
                rows.append({"row": row["name"], "model": model, "case": case, "path": path,
                             "epoch_s": seconds[(model, case)], "max_epochs": block["epochs"]})
    return rows


def test_grid_estimate_counts_the_paper_grid_jobs(bench, capsys):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    models = {(m, c) for m in config["models"] for c in ("train", "distill")}
    seconds = {key: 1.0 + i for i, key in enumerate(sorted(models))}
    lines = bench.grid_estimate(epoch_rows(config, seconds), config, typical_epochs=(50,))
    # the same totals as `snakemake -n` on config.yaml (tests/workflow: test_paper_scale_dag)
    assert sum(x["jobs"] for x in lines if x["case"] == "train") == 70
    assert sum(x["jobs"] for x in lines if x["case"] == "distill") == 320
    by = {(x["dataset"], x["model"], x["case"]): x for x in lines}
    # DGCNN: one plain training per fold, shared by both ModelNet40 rows
    assert by[("modelnet40", "dgcnn", "train")]["jobs"] == 5
    # the MNIST MLP: plain and augmented trainings; s->s, s_aug->s, t->s, t'->s' x 4 T x 5 folds
    assert by[("mnist", "mlp", "train")]["jobs"] == 10
    assert by[("mnist", "mlp", "distill")]["jobs"] == 80
    mlp = by[("mnist", "mlp", "distill")]
    assert mlp["gpu_h_max"] == pytest.approx(80 * seconds[("mlp", "distill")] * 10 / 3600)
    dgcnn = by[("modelnet40", "dgcnn", "train")]
    assert dgcnn["gpu_h_50ep"] == pytest.approx(5 * seconds[("dgcnn", "train")] * 50 / 3600)
    assert dgcnn["gpu_h_max"] == pytest.approx(5 * seconds[("dgcnn", "train")] * 200 / 3600)
    assert "ESTIMATE" in capsys.readouterr().out
