"""The three job functions (train, distil, evaluate) on tiny split and fold files."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from kdinv import metrics
from kdinv.data.splits import load_split, save_split, write_folds
from kdinv.evaluation import evaluate_runs
from kdinv.io import load_tensors, save_tensors
from kdinv.jobs import distill_student, train_model
from kdinv.models.checkpoint import load_model
from kdinv.symmetry.transforms import make_transform
from kdinv.training import predict

CPU = torch.device("cpu")
SIZE = 12
SHIFT = {"transform": "shift_2d", "max_shift": 2, "background": -1.0}
TEACHER = {
    "arch": "mlp",
    "params": {"hidden": [16]},
    "training": {"epochs": 10, "batch_size": 16, "lr": 0.003, "patience": 4},
}
STUDENT = {
    "arch": "mlp",
    "params": {"hidden": [8]},
    "training": {"epochs": 4, "batch_size": 32, "lr": 0.01},
    "distillation": {"epochs": 10, "batch_size": 16, "lr": 0.003, "patience": 4},
}
WILDCARDS = {"dataset": "toy", "model": "teacher", "augment": "plain", "fold": "0"}


def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1x12x12 images, background -1, with a 4x4 patch at a random place at least 2 px from every
    edge (so shift_2d has room); the class is the patch's brightness (dim 0, bright 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 1, SIZE, SIZE), -1.0)
    y = torch.arange(n) % 2
    for i in range(n):
        top, left = torch.randint(2, SIZE - 2 - 4 + 1, (2,), generator=g).tolist()
        level = 0.8 if y[i] else -0.2
        x[i, 0, top : top + 4, left : left + 4] = level + 0.2 * torch.rand(4, 4, generator=g)
    return x, y


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    x, y = images(160, seed=0)
    save_split(x, y, 2, root / "train.pt")
    xt, yt = images(64, seed=1)
    save_split(xt, yt, 2, root / "test.pt")
    folds = [root / "fold0.pt", root / "fold1.pt"]
    write_folds(root / "train.pt", k=2, seed=0, outputs=folds)
    return {"root": root, "train": root / "train.pt", "test": root / "test.pt", "fold": folds[0]}


def run_train(files, out_dir, seed=11, symmetry=None, spec=TEACHER, wildcards=WILDCARDS):
    out_model, out_logits = out_dir / "model.pt", out_dir / "train_logits.pt"
    train_model(files["train"], files["fold"], spec, symmetry, seed, "cpu", out_model, out_logits,
                dict(wildcards))
    return out_model, out_logits


@pytest.fixture(scope="module")
def teacher(files, tmp_path_factory):
    return run_train(files, tmp_path_factory.mktemp("teacher"))


# --- train_model -------------------------------------------------------------------------------


def test_train_model_writes_model_and_matching_logit_cache(files, teacher):
    out_model, out_logits = teacher
    x, y, _ = load_split(files["train"])
    cache = load_tensors(out_logits)
    assert cache["logits"].shape == (len(y), 2)  # the whole training split, both fold parts
    assert cache["seed"] == 11
    assert cache["wildcards"] == WILDCARDS
    ckpt = load_tensors(out_model)
    assert ckpt["arch"] == "mlp" and ckpt["params"] == {"hidden": [16]}
    assert ckpt["input_shape"] == [1, SIZE, SIZE] and ckpt["num_classes"] == 2
    assert ckpt["seed"] == 11 and ckpt["wildcards"] == WILDCARDS
    model = load_model(out_model)
    logits = predict(model, x, 1024, CPU)
    torch.testing.assert_close(logits, cache["logits"], atol=1e-5, rtol=0)
    # the cached logits are those of the best-validation weights, which learnt the rule
    val_idx = load_tensors(files["fold"])["val"]
    assert metrics.accuracy(logits[val_idx], y[val_idx]) == pytest.approx(ckpt["best_val_accuracy"])
    assert ckpt["best_val_accuracy"] > 0.85


def test_train_model_with_a_symmetry(files, teacher, tmp_path):
    out_model, out_logits = run_train(files, tmp_path, symmetry=SHIFT)
    x, _, _ = load_split(files["train"])
    cache = load_tensors(out_logits)["logits"]
    assert cache.shape == (len(x), 2)
    model = load_model(out_model)
    torch.testing.assert_close(predict(model, x, 1024, CPU), cache, atol=1e-5, rtol=0)
    # same seed as the plain teacher: different weights only because the inputs were shifted
    plain = load_tensors(teacher[0])["state_dict"]
    augmented = load_tensors(out_model)["state_dict"]
    assert not all(torch.equal(plain[k], augmented[k]) for k in plain)


@pytest.mark.slow
def test_train_model_is_deterministic(files, tmp_path):
    a = run_train(files, tmp_path / "a", seed=5, symmetry=SHIFT)
    b = run_train(files, tmp_path / "b", seed=5, symmetry=SHIFT)
    ckpt_a, ckpt_b = load_tensors(a[0]), load_tensors(b[0])
    assert ckpt_a["state_dict"].keys() == ckpt_b["state_dict"].keys()
    for key in ckpt_a["state_dict"]:
        assert torch.equal(ckpt_a["state_dict"][key], ckpt_b["state_dict"][key]), key
    def strip(hist):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in hist]

    assert strip(ckpt_a["history"]) == strip(ckpt_b["history"])
    assert torch.equal(load_tensors(a[1])["logits"], load_tensors(b[1])["logits"])


# --- distill_student ---------------------------------------------------------------------------


PLAIN_KD = {"recipe": "plain", "direction": "forward", "weight": None, "alpha": None, "symmetry": None,
            "transform": None}


def distill(files, teacher_logits, out_model, seed=3, temperature=4.0):
    # plain KD from the cache without a gate reads neither the teacher's model nor the test split
    distill_student(files["train"], files["fold"], teacher_logits, "unused/model.pt", "unused/test.pt",
                    STUDENT, temperature, PLAIN_KD, seed, "cpu", out_model,
                    {"student": "s", "T": temperature, "fold": 0})


def test_distill_student_writes_a_checkpoint(files, teacher, tmp_path):
    out_model = tmp_path / "distill" / "model.pt"
    distill(files, teacher[1], out_model)
    ckpt = load_tensors(out_model)
    assert ckpt["arch"] == "mlp" and ckpt["params"] == {"hidden": [8]}
    assert ckpt["training"] == {**STUDENT["distillation"], "weight_decay": 0.0, "lr_patience": None,
                                "lr_factor": 0.1, "eval_batch_size": 1024, "grad_clip": None}
    assert ckpt["wildcards"] == {"student": "s", "T": "4.0", "fold": "0"}
    assert ckpt["seed"] == 3
    # the stored weights are the best-validation ones, validated against the true labels
    x, y, _ = load_split(files["train"])
    val_idx = load_tensors(files["fold"])["val"]
    student = predict(load_model(out_model), x[val_idx], 1024, CPU)
    assert metrics.accuracy(student, y[val_idx]) == pytest.approx(ckpt["best_val_accuracy"])


@pytest.mark.slow
def test_student_learns_from_the_teacher_logits_not_the_labels(tmp_path):
    """The labels of the fold's training part are random; only the (correct, confident) teacher
    logits carry the rule, so a student reaches a high validation accuracy only by using them."""
    x, y_true = images(160, seed=4)
    train_idx, val_idx = torch.arange(100), torch.arange(100, 160)
    y_split = y_true.clone()
    y_split[train_idx] = torch.randint(0, 2, (100,), generator=torch.Generator().manual_seed(0))
    assert (y_split[train_idx] == y_true[train_idx]).float().mean() < 0.65
    save_split(x, y_split, 2, tmp_path / "train.pt")
    fold = {"train": train_idx, "val": val_idx, "fold": 0, "k": 2, "seed": 0}
    save_tensors(fold, tmp_path / "fold.pt")
    teacher_logits = (torch.nn.functional.one_hot(y_true, 2).float() * 2 - 1) * 4
    save_tensors({"logits": teacher_logits}, tmp_path / "teacher.pt")
    files = {"train": tmp_path / "train.pt", "fold": tmp_path / "fold.pt"}
    distill(files, tmp_path / "teacher.pt", tmp_path / "model.pt", temperature=1.0)
    ckpt = load_tensors(tmp_path / "model.pt")
    assert ckpt["best_val_accuracy"] > 0.75
    student = predict(load_model(tmp_path / "model.pt"), x[train_idx], 1024, CPU)
    assert metrics.agreement(student, teacher_logits[train_idx]) > 0.75
    # control: the same network trained on those labels learns nothing
    spec = {**STUDENT, "training": STUDENT["distillation"]}
    run_train(files, tmp_path / "control", seed=3, spec=spec)
    assert load_tensors(tmp_path / "control" / "model.pt")["best_val_accuracy"] < 0.65


@pytest.mark.parametrize("shape", [(160, 3), (159, 2), (160,)])
def test_distill_rejects_teacher_logits_of_the_wrong_shape(files, tmp_path, shape):
    bad = tmp_path / "bad_teacher_logits.pt"
    save_tensors({"logits": torch.zeros(shape)}, bad)
    out_model = tmp_path / "model.pt"
    with pytest.raises(ValueError, match="bad_teacher_logits.pt"):
        distill(files, bad, out_model)
    assert not out_model.exists()


# --- evaluate_model ----------------------------------------------------------------------------

SYMMETRIES = {"translation": SHIFT, "small": {**SHIFT, "max_shift": 1}}
IDS = {"dataset": "toy", "fold": 0, "kind": "distill", "model": "teacher", "augment": "plain"}


def evaluate(model_file, files, out_dir, references=None, im_seed=42, symmetries=SYMMETRIES):
    """evaluate_runs on one run; ``references``: name -> a file whose {"logits": ...} are a
    reference's test logits (gathered into one file of {name: logits}, as the trained group's)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out_metrics, out_logits = out_dir / "metrics.parquet", out_dir / "test_logits.pt"
    ref_file = None
    if references:
        ref_file = out_dir / "references.pt"
        save_tensors({"logits": {k: _logits_of(v) for k, v in references.items()}}, ref_file)
    run = {"dir": str(model_file.parent), "identifiers": IDS, "references": list(references or {})}
    table = evaluate_runs([run], files["test"], files["train"], files["fold"], symmetries, im_seed, 7,
                          "cpu", 16, out_metrics, reference_logits=ref_file, out_logits=out_logits)
    return table, out_metrics, out_logits


def _logits_of(path):
    logits = load_tensors(path)["logits"]
    return logits["teacher/plain"] if isinstance(logits, dict) else logits


@pytest.fixture(scope="module")
def first_eval(files, teacher, tmp_path_factory):
    return evaluate(teacher[0], files, tmp_path_factory.mktemp("eval0"))


def test_evaluate_without_references(files, teacher, first_eval):
    table, out_metrics, out_logits = first_eval
    assert len(table) == len(SYMMETRIES)
    assert sorted(table["symmetry"]) == sorted(SYMMETRIES)
    assert table["agreement"].isna().all() and table["kl"].isna().all()
    assert table["reference"].isna().all()
    # files: the parquet table equals the returned one, the logits are the model's test logits
    on_disk = pd.read_parquet(out_metrics)
    pd.testing.assert_frame_equal(on_disk, table, check_dtype=False)
    x, _, _ = load_split(files["test"])
    logits = predict(load_model(teacher[0]), x, 16, CPU)
    torch.testing.assert_close(load_tensors(out_logits)["logits"]["teacher/plain"], logits, atol=0, rtol=0)
    assert not list(out_metrics.parent.glob("*.tmp*"))


def test_evaluate_against_references(files, teacher, first_eval, tmp_path):
    _, _, own_logits = first_eval
    x, y, _ = load_split(files["test"])
    g = torch.Generator().manual_seed(0)
    other = torch.randn(len(y), 2, generator=g) * 3
    save_tensors({"logits": other}, tmp_path / "other.pt")
    refs = {"self": own_logits, "other": tmp_path / "other.pt"}
    table, out_metrics, _ = evaluate(teacher[0], files, tmp_path / "eval", references=refs)

    assert len(table) == len(SYMMETRIES) * len(refs)
    assert sorted(zip(table["symmetry"], table["reference"])) == sorted(
        (s, r) for s in SYMMETRIES for r in refs
    )
    for col, value in IDS.items():
        assert (table[col] == value).all(), col
    assert (table["n_test"] == len(y)).all()

    own = table[table["reference"] == "self"]
    assert (own["agreement"] == 1.0).all()
    assert own["kl"].abs().max() < 1e-9

    # every metric equals kdinv.metrics on predict()'s output
    model = load_model(teacher[0])
    logits = predict(model, x, 16, CPU)
    for _, row in table.iterrows():
        assert row["accuracy"] == pytest.approx(metrics.accuracy(logits, y), abs=1e-12)
        assert row["nll"] == pytest.approx(metrics.nll(logits, y), rel=1e-9)
        assert row["ece"] == pytest.approx(metrics.ece(logits, y), abs=1e-12)
        transform = make_transform(SYMMETRIES[row["symmetry"]])
        transformed = transform(x, torch.Generator().manual_seed(42))
        im = metrics.invariance(logits, predict(model, transformed, 16, CPU))
        assert row["im"] == pytest.approx(im, rel=1e-9, abs=1e-12)
        ref = _logits_of(refs[row["reference"]])
        assert row["agreement"] == pytest.approx(metrics.agreement(logits, ref), abs=1e-12)
        assert row["kl"] == pytest.approx(metrics.kl_divergence(ref, logits), rel=1e-9, abs=1e-12)
    theirs = table[table["reference"] == "other"]
    assert (theirs["agreement"] < 1.0).all() and (theirs["kl"] > 0.01).all()
    pd.testing.assert_frame_equal(pd.read_parquet(out_metrics), table, check_dtype=False)


def test_invariance_depends_on_im_seed_only(files, teacher, first_eval, tmp_path):
    table0 = first_eval[0].set_index("symmetry")
    same = evaluate(teacher[0], files, tmp_path / "same", im_seed=42)[0].set_index("symmetry")
    other = evaluate(teacher[0], files, tmp_path / "other", im_seed=43)[0].set_index("symmetry")
    for sym in SYMMETRIES:
        assert same.loc[sym, "im"] == table0.loc[sym, "im"]
        assert other.loc[sym, "im"] != table0.loc[sym, "im"]  # an MLP is not shift invariant
        assert table0.loc[sym, "im"] > 0
        assert other.loc[sym, "accuracy"] == table0.loc[sym, "accuracy"]
    assert all(math.isfinite(v) for v in table0["im"])


def test_non_finite_loss_names_model_fold_and_epoch_and_writes_nothing(files, tmp_path):
    """A diverging run (here: lr so large that the loss overflows) stops with the run's identity."""
    from kdinv.training import NumericalError

    spec = {**TEACHER, "training": {"epochs": 3, "batch_size": 16, "lr": 1e30}}
    with pytest.raises(NumericalError) as err:
        run_train(files, tmp_path, spec=spec)
    message = str(err.value)
    assert "model=teacher" in message and "fold=0" in message and "epoch 1" in message
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "train_logits.pt").exists()
