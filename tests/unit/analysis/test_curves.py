"""kdinv.analysis.curves: the per-epoch history of checkpoints as a table, and its figure."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from kdinv.analysis.curves import COLUMNS, curves_table, parse_model_path, plot_curves
from kdinv.io import save_tensors


def history(epochs: int, scale: float, best: int) -> list[dict]:
    return [
        {
            "epoch": e, "train_loss": scale * 2.0 / e, "val_loss": scale * 2.5 / e,
            "val_accuracy": min(0.99, 0.3 + 0.6 * e / epochs - (0.1 if e > best else 0.0)),
            "lr": 1e-3, "seconds": 0.1,
        }
        for e in range(1, epochs + 1)
    ]


def checkpoint(path, wildcards: dict, epochs: int, scale: float = 1.0, best: int | None = None):
    best = best or epochs
    save_tensors({
        "state_dict": {"w": torch.zeros(3)}, "arch": "mlp", "history": history(epochs, scale, best),
        "best_epoch": best, "best_val_accuracy": 0.9, "wildcards": wildcards,
    }, path)
    return path


@pytest.fixture
def tree(tmp_path):
    """Trained and distilled checkpoints of two datasets under tmp_path/results."""
    res = tmp_path / "results"
    files = []
    for dataset in ("mnist", "jets"):
        for model, augment, epochs in (("teach", "plain", 6), ("stud", "plain", 5), ("stud", "shift", 4)):
            for fold in (0, 1):
                files.append(checkpoint(
                    res / dataset / "train" / model / augment / f"fold{fold}" / "model.pt",
                    {"dataset": dataset, "model": model, "augment": augment, "fold": str(fold)},
                    epochs + fold, scale=1 + fold, best=3,
                ))
        for teacher, taug in (("teach", "plain"), ("stud", "shift")):
            for temp in ("1", "4", "0.5"):
                for fold in (0, 1):
                    files.append(checkpoint(
                        res / dataset / "distill" / teacher / taug / "stud" / f"T{temp}" / f"fold{fold}"
                        / "model.pt",
                        {"dataset": dataset, "teacher": teacher, "teacher_augment": taug,
                         "student": "stud", "temperature": temp, "fold": str(fold)},
                        3, scale=0.1 * float(temp),
                    ))
    return files


def test_parse_model_path():
    assert parse_model_path("results/mnist/train/resnet/translation/fold3/model.pt") == {
        "kind": "train", "dataset": "mnist", "model": "resnet", "augment": "translation",
        "teacher": None, "teacher_augment": None, "recipe": None,
        "temperature": pytest.approx(math.nan, nan_ok=True), "fold": 3,
    }
    ids = parse_model_path("/x/results/jets/distill/jet-deepsets/plain/jet-mlp/T16/fold0/model.pt")
    assert ids == {"kind": "distill", "dataset": "jets", "model": "jet-mlp", "augment": "plain",
                   "teacher": "jet-deepsets", "teacher_augment": "plain", "recipe": "plain",
                   "temperature": 16.0, "fold": 0}
    assert parse_model_path("results/a/distill/t/plain/s/T0.5/fold1/model.pt")["temperature"] == 0.5
    for bad in ("results/mnist/train/resnet/fold0/model.pt", "results/mnist/x/m/plain/fold0/model.pt",
                "results/mnist/train/resnet/plain/fold0/other.pt"):
        with pytest.raises(ValueError):
            parse_model_path(bad)


def test_curves_table(tree):
    curves = curves_table(tree)
    assert list(curves.columns) == COLUMNS
    # epochs: train (6+7) + (5+6) + (4+5) = 33 per dataset; distill 2 teachers x 3 T x 2 folds x 3.
    assert len(curves) == 2 * (33 + 36)
    assert set(curves["kind"]) == {"train", "distill"}
    assert curves.groupby(["kind", "dataset", "model", "augment", "teacher", "teacher_augment",
                           "temperature", "fold"], dropna=False).ngroups == len(tree)
    tr = curves[(curves["kind"] == "train") & (curves["dataset"] == "jets") & (curves["model"] == "stud")
                & (curves["augment"] == "shift") & (curves["fold"] == 1)]
    assert tr["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert tr["train_loss"].tolist() == pytest.approx([4.0 / e for e in range(1, 6)])
    assert tr["teacher"].isna().all() and tr["temperature"].isna().all()
    assert (tr["best_epoch"] == 3).all() and tr["is_best"].tolist() == [False, False, True, False, False]
    di = curves[(curves["kind"] == "distill") & (curves["dataset"] == "mnist")]
    assert sorted(di["temperature"].unique()) == [0.5, 1.0, 4.0]
    assert set(di["teacher"]) == {"teach", "stud"} and set(di["teacher_augment"]) == {"plain", "shift"}
    assert (di["model"] == "stud").all() and (di["augment"] == "plain").all()
    assert set(di["run"]) >= {"teach → stud, T=4", "stud (shift) → stud, T=0.5"}
    assert di.groupby(["teacher", "temperature", "fold"])["is_best"].sum().eq(1).all()


def test_wildcards_must_match_the_path(tmp_path):
    path = checkpoint(tmp_path / "results/mnist/train/mlp/plain/fold0/model.pt",
                      {"dataset": "mnist", "model": "mlp", "augment": "plain", "fold": "1"}, 3)
    with pytest.raises(ValueError, match="fold"):
        curves_table([path])
    path = checkpoint(tmp_path / "results/mnist/distill/t/plain/mlp/T4/fold0/model.pt",
                      {"dataset": "mnist", "teacher": "t", "teacher_augment": "plain",
                       "student": "mlp", "temperature": "8", "fold": "0"}, 3)
    with pytest.raises(ValueError, match="temperature"):
        curves_table([path])
    no_history = tmp_path / "results/mnist/train/mlp/plain/fold2/model.pt"
    save_tensors({"state_dict": {}}, no_history)
    with pytest.raises(ValueError, match="history"):
        curves_table([no_history])


@pytest.mark.slow
def test_plot_curves(tree, tmp_path):
    curves = curves_table(tree)
    png, pdf = tmp_path / "curves.png", tmp_path / "curves.pdf"
    plot_curves(curves, png, pdf)
    assert pdf.read_bytes()[:4] == b"%PDF"
    with Image.open(png) as img:
        assert img.width > 800 and img.height > 300
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20
    # Trained runs of one dataset only: still a figure (no distillation half).
    only = curves[(curves["kind"] == "train") & (curves["dataset"] == "mnist")]
    plot_curves(only, tmp_path / "t.png", tmp_path / "t.pdf")
    with Image.open(tmp_path / "t.png") as img:
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20)) > 20
    with pytest.raises(ValueError):
        plot_curves(curves.iloc[0:0], tmp_path / "e.png", tmp_path / "e.pdf")
