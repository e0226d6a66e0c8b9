"""Every job path on an accelerator, without one: the jobs run with ``device="meta"`` under the
stand-in accelerator of ``tests/standin_device.py`` (real values, computed on the CPU; any operation
mixing devices fails as on a GPU). A model or tensor left on the CPU while its job computes on the
accelerator fails here as it fails on a GPU.

Covered: training (plain, augmented, a group-averaged model), every distillation recipe (plain
forward and reverse, augmented from the cache and with a per-batch teacher, consistency, mixup),
the teacher gate (its float32 and float64 passes), the augmented recipe's cache check, the
evaluation of trained, distilled and group-averaged models, a resume from a saved state, and the
bf16 autocast path (with the stand-in's own autocast: torch's knows no meta device).
"""

from __future__ import annotations

import copy
import logging
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from conftest import toy_sets
from standin_device import STANDIN, DeviceMismatch, StandInAutocast, standin_accelerator

from kdinv import training
from kdinv.data.splits import load_fold, load_split, save_split, write_folds
from kdinv.evaluation import evaluate_runs, teacher_gate
from kdinv.io import load_tensors
from kdinv.jobs import distill_student, train_model
from kdinv.models import ResNet18APS
from kdinv.models.checkpoint import load_model
from kdinv.training import Resume, TrainConfig, TrainingInterrupted, fit, outputs_loss

DEVICE = str(STANDIN)
PERM = {"transform": "permute_set"}
ROT = {"transform": "rot90_z_3d"}
TEACHER = {"arch": "deepsets", "params": {"phi": [16], "rho": [16]},
           "training": {"epochs": 2, "batch_size": 32, "lr": 1e-2}}
STUDENT = {"arch": "mlp", "params": {"hidden": [8]},
           "training": {"epochs": 2, "batch_size": 32, "lr": 1e-2},
           "distillation": {"epochs": 2, "batch_size": 32, "lr": 1e-2}}
DGCNN = {"arch": "dgcnn", "params": {"k": 3, "edge_layers": [[8]], "embedding": 16, "head": [8]},
         "training": {"epochs": 1, "batch_size": 32, "lr": 1e-2}}
TRANSLATE = {"transform": "translate_3d", "scale": 0.5}
AVERAGED = {"arch": "mlp", "params": {"hidden": [12]}, "group_average": "rot90_z_3d",
            "training": {"epochs": 2, "batch_size": 32, "lr": 1e-2}}


def recipe(name: str, **extra) -> dict:
    out = {"recipe": name, "direction": "forward", "weight": None, "alpha": None, "symmetry": None,
           "transform": None}
    return {**out, **extra}


RECIPES = {
    "plain-forward": recipe("plain"),
    "plain-reverse": recipe("plain", direction="reverse"),
    "augmented-cached": recipe("augmented", symmetry="permutation", transform=PERM),
    "consistency": recipe("consistency", weight=0.5, symmetry="permutation", transform=PERM),
    "mixup": recipe("mixup", alpha=0.4),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("device")
    save_split(*toy_sets(160, 0), 2, root / "train.pt")
    save_split(*toy_sets(64, 1), 2, root / "test.pt")
    write_folds(root / "train.pt", 2, 0, [root / "fold0.pt", root / "fold1.pt"])
    return root


def train(data, out, spec, symmetry=None, device=DEVICE, precision="float32"):
    out.mkdir(parents=True, exist_ok=True)
    train_model(data / "train.pt", data / "fold0.pt", spec, symmetry, 3, device, out / "model.pt",
                out / "train_logits.pt", {"model": out.name, "fold": "0"}, precision=precision)
    return out


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """On the stand-in accelerator: an invariant teacher (DeepSets), a student trained plainly (s,
    also the s→s teacher), a group-averaged model and a DGCNN, each a training job run there."""
    root = tmp_path_factory.mktemp("trained")
    with standin_accelerator() as mode:
        out = {
            "teacher": train(data, root / "teacher", TEACHER),
            "student": train(data, root / "student", STUDENT),
            "averaged": train(data, root / "averaged", AVERAGED),
            "dgcnn": train(data, root / "dgcnn", DGCNN),
        }
    assert mode.ops_on_standin > 1000  # the training ran on the stand-in device
    return out


def distill(data, teacher_dir, variant, gates, out, device=DEVICE, precision="float32"):
    distill_student(data / "train.pt", data / "fold0.pt", teacher_dir / "train_logits.pt",
                    teacher_dir / "model.pt", data / "test.pt", STUDENT, 4.0, variant, 7, device,
                    out / "model.pt", {"fold": "0"}, gates=gates, gate_seed=5, precision=precision)
    return out / "model.pt"


def test_the_stand_in_fails_where_a_gpu_fails():
    """The check itself: a CPU module fed accelerator inputs, and a CPU generator drawing on the
    accelerator, raise; moving the module first works and reads back the same values."""
    torch.manual_seed(0)
    model, x = torch.nn.Linear(3, 2), torch.randn(4, 3)
    expected = model(x)
    with standin_accelerator():
        with pytest.raises(DeviceMismatch, match="same device"):
            model(x.to(DEVICE))
        with pytest.raises(DeviceMismatch, match="generator"):
            torch.rand(3, generator=torch.Generator(), device=DEVICE)
        got = model.to(DEVICE)(x.to(DEVICE)).cpu()
    assert torch.equal(got, expected)


def test_the_resnet_computes_on_the_accelerator_as_on_the_cpu():
    """ResNet18-APS, whose circular padding and polyphase choice are its own code, runs forward
    and backward on the stand-in with every tensor where its inputs are, to the CPU's values."""
    torch.manual_seed(3)
    model, x = ResNet18APS(1, 10, width=4), torch.randn(3, 1, 28, 28)
    moved = copy.deepcopy(model)
    model(x).sum().backward()
    with standin_accelerator():
        moved.to(DEVICE)
        out = moved(x.to(DEVICE))
        out.sum().backward()
        grads = {name: p.grad.cpu() for name, p in moved.named_parameters()}
    assert out.device == STANDIN
    assert all(torch.equal(grads[name], p.grad) for name, p in model.named_parameters())


def test_training_plain_augmented_and_group_averaged(trained, data, tmp_path):
    with standin_accelerator():
        train(data, tmp_path / "augmented", STUDENT, symmetry=PERM)
    for path in [*(d / "model.pt" for d in trained.values()), tmp_path / "augmented" / "model.pt"]:
        assert all(v.device.type == "cpu" for v in load_tensors(path)["state_dict"].values())


def test_training_on_the_stand_in_equals_the_cpu(trained, data, tmp_path):
    """The stand-in computes on the CPU: the same job gives the same checkpoint on both, so a
    difference would be a stand-in artefact, not a placement."""
    cpu = train(data, tmp_path / "student", STUDENT, device="cpu")
    a = load_tensors(cpu / "model.pt")["state_dict"]
    b = load_tensors(trained["student"] / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the cached logits, which the best weights compute after they are loaded back
    assert torch.equal(load_tensors(cpu / "train_logits.pt")["logits"],
                       load_tensors(trained["student"] / "train_logits.pt")["logits"])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_gated_distillations_of_every_recipe(trained, data, tmp_path, name):
    """t→s: the teacher passes the gate (float32 pass) for the permutation symmetry, then each
    recipe distils it; augmented also checks the cache against the teacher (the cache check)."""
    with standin_accelerator() as mode:
        distill(data, trained["teacher"], RECIPES[name], {"permutation": PERM}, tmp_path)
    assert (tmp_path / "model.pt").exists()
    # the teacher's weights went to the accelerator once (its first layer is 3 → 16)
    assert mode.host_to_device.count((16, 3)) == 1


def test_augmented_with_a_per_batch_teacher(trained, data, tmp_path, caplog):
    """s→s under augmented: no gate, the teacher runs on every batch, on the accelerator."""
    with standin_accelerator(), caplog.at_level(logging.INFO, logger="kdinv"):
        distill(data, trained["student"], RECIPES["augmented-cached"], {}, tmp_path)
    assert "runs the teacher on every batch" in caplog.text


class _LeakySum(torch.nn.Module):
    """Permutation-invariant in float64; in float32 it adds a term that depends on the first
    element (a stand-in for DGCNN's near-ties), so the gate needs its float64 pass."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 4)

    def forward(self, x):
        out = self.linear(x.sum(1))
        return out + F.pad(x[:, 0, :1], (0, 3)) if x.dtype == torch.float32 else out


def test_the_teacher_gate_float32_then_float64(caplog):
    torch.manual_seed(0)
    x, _ = toy_sets(64, 2)
    with standin_accelerator(), caplog.at_level(logging.INFO, logger="kdinv"):
        found = teacher_gate(_LeakySum(), x, {"permutation": PERM}, 5, 16, STANDIN, "leaky")
    assert "IM (float32)" in caplog.text and "IM (float64)" in caplog.text
    assert found["permutation"] <= 1e-4


@pytest.mark.slow
def test_evaluation_of_trained_distilled_and_averaged_models(trained, data, tmp_path, monkeypatch):
    """With the invariance measures: the orbit gap and the controls run on the stand-in; the Lie
    derivative is left out here (forward-mode autodiff does not run on the stand-in's tensor
    subclass), and its placement is that of the orbit gap (the model and the tangent on the job's
    device)."""
    from kdinv.symmetry import measures

    monkeypatch.setattr(measures, "GENERATORS", {})
    with standin_accelerator():
        student = distill(data, trained["teacher"], RECIPES["plain-forward"], {"permutation": PERM},
                          tmp_path / "d")
    runs = [
        {"dir": str(trained["teacher"]), "identifiers": {"model": "teacher", "augment": "plain"}},
        {"dir": str(trained["averaged"]), "identifiers": {"model": "averaged", "augment": "plain"}},
        {"dir": str(student.parent), "identifiers": {"model": "student", "augment": "plain"}},
        {"dir": str(trained["dgcnn"]), "identifiers": {"model": "dgcnn", "augment": "plain"}},
    ]
    kwargs = dict(test_split=data / "test.pt", train_split=data / "train.pt", fold_file=data / "fold0.pt",
                  symmetries={"permutation": PERM, "rotation": ROT, "translation": TRANSLATE}, im_seed=1, val_seed=2,
                  batch_size=32, measures={"input_kind": "point_cloud", "samples": 40, "seed": 3})
    with standin_accelerator():
        table = evaluate_runs(runs, device=DEVICE, out_metrics=tmp_path / "m.parquet",
                              out_logits=tmp_path / "l.pt", **kwargs)
    cpu = evaluate_runs(runs, device="cpu", out_metrics=tmp_path / "c.parquet", **kwargs)
    assert table.equals(cpu)
    averaged = table[(table.model == "averaged") & (table.symmetry == "rotation")]
    assert averaged.im.max() <= 1e-4  # the group average is invariant on the accelerator too
    dgcnn = table[(table.model == "dgcnn") & (table.symmetry == "translation")]
    assert dgcnn.im.max() <= 1e-4 < dgcnn.im_random.min()
    # the measures of the group average: its orbit gap is 0, its control is not
    assert averaged.orbit_gap_rot90_z_3d.max() <= 1e-10 < averaged.orbit_gap_rot90_z_3d_random.min()


def test_resume_from_a_saved_state_on_the_accelerator(data, tmp_path):
    """SIGTERM in the middle of an epoch: the state is saved from the accelerator, and the resumed
    run (loading it back there) ends with the weights of an uninterrupted run."""
    x, y, _ = load_split(data / "train.pt")
    tr, va = load_fold(data / "fold0.pt", len(y))
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-2)

    def run(resume, stop_at=None):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(18, 8), torch.nn.Dropout(0.3),
                                    torch.nn.ReLU(), torch.nn.Linear(8, 2))
        base = outputs_loss(F.cross_entropy)

        def loss(m, batch):
            if (batch.epoch, batch.step) == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return base(m, batch)

        return fit(model, x[tr], y[tr], x[va], y[va], loss, cfg, torch.Generator().manual_seed(1),
                   STANDIN, resume=Resume(resume), seed=4)[0]

    with standin_accelerator():
        reference = run(tmp_path / "a.pt")
        with pytest.raises(TrainingInterrupted):
            run(tmp_path / "b.pt", stop_at=(2, 2))
        assert (tmp_path / "b.pt").exists()
        resumed = run(tmp_path / "b.pt")
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_bf16_training_and_distillation(trained, data, tmp_path, monkeypatch):
    """precision bf16: the forward passes run under (the stand-in's) autocast, on the accelerator."""
    autocasts = []

    def stand_in_autocast(device, precision):
        assert device == STANDIN and precision == "bf16"
        autocasts.append(StandInAutocast())
        return autocasts[-1]

    monkeypatch.setattr(training, "autocast", stand_in_autocast)
    with standin_accelerator():
        train(data, tmp_path / "s", STUDENT, precision="bf16")
        trained_ops = sum(m.ops for m in autocasts)
        distill(data, trained["teacher"], RECIPES["consistency"], {"permutation": PERM}, tmp_path / "d",
                precision="bf16")
    # the training's and the distillation's matmuls ran in bfloat16 (3 steps x 2 epochs x 2 layers,
    # twice for consistency's two passes)
    assert trained_ops >= 12 and sum(m.ops for m in autocasts) - trained_ops >= 24
    state = load_tensors(tmp_path / "d" / "model.pt")["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values())  # weights stay float32


def test_a_model_loaded_to_the_cpu_is_moved_where_it_computes(trained, data):
    """The defect this file guards against, at its source: predict() puts the model where its
    inputs go, once, instead of computing with CPU weights on accelerator inputs."""
    from kdinv.training import predict

    model = load_model(trained["teacher"] / "model.pt")
    x, _, _ = load_split(data / "test.pt")
    with standin_accelerator() as mode:
        out = predict(model, x, 32, STANDIN)
        predict(model, x, 32, STANDIN)
    assert out.device.type == "cpu" and mode.host_to_device.count((16, 3)) == 1
