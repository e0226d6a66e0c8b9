"""Input scaling fitted on a fold's training part and carried inside every model of the fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kdinv.data.scaling import fit_scaling
from kdinv.data.splits import load_fold_scaling, load_split, save_split, write_folds
from kdinv.evaluation import evaluate_runs
from kdinv.io import load_tensors
from kdinv.jobs import distill_student, train_model
from kdinv.models.checkpoint import load_model
from kdinv.models.wrappers import Standardized
from kdinv.training import predict

CPU = torch.device("cpu")


def sets(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sets of 6 elements x 3 features on very different scales (like pT in GeV next to angles);
    the class is whether the first feature's sum is large."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, 3, generator=g) * torch.tensor([40.0, 0.3, 0.1]) + torch.tensor([60.0, 0.0, 1.0])
    y = (x[:, :, 0].sum(1) > 360).long()
    return x, y


def test_robust_statistics_match_pandas_quantiles():
    x = torch.randn(200, 16, 3) * torch.tensor([5.0, 1.0, 0.01]) + 3
    x[:50, 10:] = 0.0  # zero-padded slots count, as in the authors' code
    stats = fit_scaling(x, "robust")
    frame = pd.DataFrame(x.reshape(-1, 3).double().numpy())
    np.testing.assert_allclose(stats["center"], frame.median(), rtol=1e-6)
    np.testing.assert_allclose(stats["scale"], frame.quantile(0.95) - frame.quantile(0.05), rtol=1e-6)


def test_a_constant_feature_gets_scale_one_and_an_unknown_method_is_refused():
    x = torch.randn(100, 4, 2)
    x[..., 1] = 7.0
    assert fit_scaling(x, "robust")["scale"][1] == 1.0
    with pytest.raises(ValueError, match="unknown input scaling 'zscore'"):
        fit_scaling(x, "zscore")


def test_each_fold_is_scaled_with_its_own_training_part(tmp_path):
    x, y = sets(120, 0)
    save_split(x, y, 2, tmp_path / "train.pt")
    folds = [tmp_path / "fold0.pt", tmp_path / "fold1.pt"]
    write_folds(tmp_path / "train.pt", k=2, seed=0, outputs=folds, scaling="robust")
    for path in folds:
        train_idx = load_tensors(path)["train"]
        stats = load_fold_scaling(path)
        expected = fit_scaling(x[train_idx], "robust")
        assert torch.equal(stats["center"], expected["center"]) and torch.equal(stats["scale"], expected["scale"])
    assert not torch.equal(load_fold_scaling(folds[0])["center"], load_fold_scaling(folds[1])["center"])
    write_folds(tmp_path / "train.pt", k=2, seed=0, outputs=folds)
    assert load_fold_scaling(folds[0]) is None


def test_models_of_a_scaled_fold_carry_its_statistics_through_training_distillation_and_evaluation(tmp_path):
    x, y = sets(160, 0)
    xt, yt = sets(64, 1)
    save_split(x, y, 2, tmp_path / "train.pt")
    save_split(xt, yt, 2, tmp_path / "test.pt")
    fold = tmp_path / "fold0.pt"
    write_folds(tmp_path / "train.pt", k=2, seed=0, outputs=[fold, tmp_path / "fold1.pt"], scaling="robust")
    spec = {
        "arch": "deepsets",
        "params": {"phi": [8], "rho": [8]},
        "training": {"epochs": 3, "batch_size": 16, "lr": 0.01},
        "distillation": {"epochs": 3, "batch_size": 16, "lr": 0.01},
    }
    teacher = tmp_path / "t" / "model.pt"
    train_model(tmp_path / "train.pt", fold, spec, None, 1, "cpu", teacher, tmp_path / "t" / "train_logits.pt",
                {"model": "t", "fold": "0"})
    ckpt = load_tensors(teacher)
    stats = load_fold_scaling(fold)
    assert torch.equal(ckpt["input_scaling"]["center"], stats["center"])
    model = load_model(teacher)
    assert isinstance(model, Standardized)
    # the checkpoint's model is the inner network applied to (x - center) / scale
    inner = predict(model.model, (xt - stats["center"]) / stats["scale"], 64, CPU)
    assert torch.allclose(predict(model, xt, 64, CPU), inner)
    # the teacher cache was computed by the scaled model on raw inputs
    x_train, _, _ = load_split(tmp_path / "train.pt")
    cache = load_tensors(tmp_path / "t" / "train_logits.pt")["logits"]
    assert torch.allclose(cache, predict(model, x_train, 64, CPU), atol=1e-6)
    student = tmp_path / "s" / "model.pt"
    plain = {"recipe": "plain", "direction": "forward", "weight": None, "alpha": None, "symmetry": None,
             "transform": None}
    distill_student(tmp_path / "train.pt", fold, tmp_path / "t" / "train_logits.pt", teacher,
                    tmp_path / "test.pt", spec, 2.0, plain, 2, "cpu", student, {"model": "s", "fold": "0"},
                    gates={"perm": {"transform": "permute_set"}})  # the scaled teacher passes the gate
    assert isinstance(load_model(student), Standardized)
    run = {"dir": str(student.parent), "identifiers": {"model": "s", "augment": "plain"}, "references": []}
    table = evaluate_runs([run], tmp_path / "test.pt", tmp_path / "train.pt", fold,
                          {"perm": {"transform": "permute_set"}}, 5, 6, "cpu", 32, tmp_path / "e" / "metrics.parquet")
    assert table["im"].iloc[0] < 1e-5  # DeepSets stays permutation-invariant behind the scaling
    assert table["accuracy"].iloc[0] > 0.6
