"""The training loop: learning, best weights, early stopping, determinism, errors, augmentation."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdinv.io import load_tensors, save_tensors
from kdinv.metrics import accuracy
from kdinv.models import build_model
from kdinv.models.checkpoint import checkpoint
from kdinv.training import NumericalError, TrainConfig, fit, outputs_loss, predict, seed_everything

CPU = torch.device("cpu")
DIM = 8


def blobs(n: int, seed: int, sep: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian blobs in DIM dimensions, centres at +-sep/2 along the all-ones direction."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    direction = torch.ones(DIM) / math.sqrt(DIM)
    x = torch.randn(n, DIM, generator=g) + (y[:, None].float() - 0.5) * sep * direction
    return x, y


@pytest.fixture(scope="module")
def data():
    x_train, y_train = blobs(256, seed=0)
    x_val, y_val = blobs(128, seed=1)
    return x_train, y_train, x_val, y_val


def mlp(seed: int = 0, hidden=(16,)) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", {"hidden": list(hidden)}, (DIM,), 2)


def run_fit(data, seed=0, cfg=None, loss_fn=F.cross_entropy, augment=None, name="model"):
    x_train, y_train, x_val, y_val = data
    cfg = cfg or TrainConfig(epochs=6, batch_size=32, lr=1e-2)
    generator = seed_everything(seed)
    model = build_model("mlp", {"hidden": [16]}, (DIM,), 2)
    state, history = fit(
        model, x_train, y_train, x_val, y_val, outputs_loss(loss_fn), cfg, generator, CPU,
        augment=augment, name=name,
    )
    return model, state, history


def best_of(history):
    """(epoch, val accuracy) of the first epoch with the highest val accuracy."""
    best = max(history, key=lambda h: h["val_accuracy"])
    return best["epoch"], best["val_accuracy"]


# --- learning and the best-validation weights --------------------------------------------------


def test_fit_learns_a_separable_problem(data):
    model, state, history = run_fit(data)
    _, best_acc = best_of(history)
    assert best_acc > 0.9  # chance is 0.5
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    model.load_state_dict(state)
    x_val, y_val = data[2], data[3]
    assert accuracy(predict(model, x_val, 1024, CPU), y_val) == best_acc


def test_returned_state_is_the_best_epoch_not_the_last(data):
    """Train on the true labels for 3 epochs, then on flipped labels: val accuracy collapses, and
    the returned weights must still be those of the best (early) epoch."""
    x_train = data[0]
    batches_per_epoch = math.ceil(len(x_train) / 32)
    calls = {"n": 0}

    def turncoat_loss(output, target):
        calls["n"] += 1
        epoch = (calls["n"] - 1) // batches_per_epoch + 1
        return F.cross_entropy(output, target if epoch <= 3 else 1 - target)

    cfg = TrainConfig(epochs=8, batch_size=32, lr=1e-2)
    model, state, history = run_fit(data, cfg=cfg, loss_fn=turncoat_loss)
    best_epoch, best_acc = best_of(history)
    assert best_epoch <= 4
    assert best_acc > 0.9
    assert history[-1]["val_accuracy"] < 0.5  # the last weights are bad ...
    x_val, y_val = data[2], data[3]
    assert accuracy(predict(model, x_val, 1024, CPU), y_val) == history[-1]["val_accuracy"]
    model.load_state_dict(state)  # ... and the returned ones the best
    assert accuracy(predict(model, x_val, 1024, CPU), y_val) == best_acc


class ScriptedModel(nn.Module):
    """A model whose validation accuracy in epoch e is ``accs[e - 1]`` exactly.

    The epoch lives in a buffer (so the returned state_dict says which epoch it is from); the
    augmentation callable advances it once per epoch. Validation labels must all be 0.
    """

    def __init__(self, accs):
        super().__init__()
        self.lin = nn.Linear(DIM, 2)
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.accs = accs

    def forward(self, x):
        if self.training:
            return self.lin(x)
        n = len(x)
        correct = round(self.accs[int(self.epoch) - 1] * n)
        logits = torch.zeros(n, 2)
        logits[:correct, 0] = 1.0
        logits[correct:, 1] = 1.0
        return logits

    def advance(self, x, generator):
        self.epoch += 1
        return x


def scripted_fit(accs, patience, epochs=None):
    x_train, y_train = blobs(32, seed=0)
    x_val, y_val = torch.zeros(20, DIM), torch.zeros(20, dtype=torch.long)
    model = ScriptedModel(accs)
    cfg = TrainConfig(epochs=epochs or len(accs), batch_size=16, lr=1e-3, patience=patience)
    state, history = fit(
        model, x_train, y_train, x_val, y_val, outputs_loss(F.cross_entropy), cfg, seed_everything(0), CPU,
        augment=model.advance,
    )
    return state, history


def test_state_comes_from_the_best_epoch_scripted():
    accs = [0.5, 0.7, 0.6, 0.9, 0.8, 0.9, 0.85]
    state, history = scripted_fit(accs, patience=None)
    assert [h["val_accuracy"] for h in history] == pytest.approx(accs)
    assert int(state["epoch"]) == 4  # first epoch reaching the maximum, not the later tie (6)


# --- early stopping ----------------------------------------------------------------------------


def test_early_stopping_when_nothing_changes(data):
    """lr = 0: the val accuracy never changes, so epoch 1 is the best and training stops after
    1 + patience epochs."""
    cfg = TrainConfig(epochs=20, batch_size=64, lr=0.0, patience=2)
    _, _, history = run_fit(data, cfg=cfg)
    assert len({h["val_accuracy"] for h in history}) == 1
    assert len(history) == 1 + 2


@pytest.mark.parametrize(
    "accs, patience, stop",
    [
        # improves at 1, 2, 4; stale at 5, 6 -> stops after 6 (the stale count resets at 4)
        ([0.5, 0.6, 0.6, 0.7, 0.7, 0.7, 0.9, 0.9, 0.9, 0.9], 2, 6),
        ([0.5, 0.6, 0.6, 0.7, 0.7, 0.7, 0.9, 0.9, 0.9, 0.9], 3, 10),  # best 7, 3 stale -> 10
        ([0.5, 0.4, 0.3, 0.2, 0.1, 0.9], 3, 4),
        ([0.1, 0.2, 0.3, 0.4], 1, 4),  # always improving: runs all epochs
    ],
)
def test_early_stopping_after_best_epoch_plus_patience(accs, patience, stop):
    state, history = scripted_fit(accs, patience=patience)
    assert len(history) == stop
    best_epoch, _ = best_of(history)
    assert len(history) == min(best_epoch + patience, len(accs))
    assert int(state["epoch"]) == best_epoch


def test_no_patience_runs_every_epoch(data):
    cfg = TrainConfig(epochs=5, batch_size=64, lr=0.0, patience=None)
    _, _, history = run_fit(data, cfg=cfg)
    assert len(history) == 5


# --- determinism -------------------------------------------------------------------------------


def _without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.mark.slow
def test_same_seed_is_bit_identical_and_another_seed_differs(data):
    def noisy(x, generator):  # random augmentation: the generator must drive it too
        return x + 0.1 * torch.randn(x.shape, generator=generator)

    _, state_a, history_a = run_fit(data, seed=7, augment=noisy)
    _, state_b, history_b = run_fit(data, seed=7, augment=noisy)
    _, state_c, _ = run_fit(data, seed=8, augment=noisy)
    assert state_a.keys() == state_b.keys() == state_c.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert _without_seconds(history_a) == _without_seconds(history_b)
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)


# --- numerical failures ------------------------------------------------------------------------


def test_nan_loss_raises_with_run_name_and_epoch(data):
    batches_per_epoch = math.ceil(len(data[0]) / 32)
    calls = {"n": 0}

    def loss_going_nan(output, target):
        calls["n"] += 1
        loss = F.cross_entropy(output, target)
        if calls["n"] > 2 * batches_per_epoch:  # epochs 1 and 2 are fine, epoch 3 is not
            loss = loss * float("nan")
        return loss

    with pytest.raises(NumericalError) as info:
        run_fit(data, loss_fn=loss_going_nan, name="mnist/mlp/plain/0")
    message = str(info.value)
    assert "mnist/mlp/plain/0" in message
    assert "epoch 3" in message


def test_infinite_input_raises(data):
    x_train, y_train, x_val, y_val = data
    x_bad = x_train.clone()
    x_bad[5, 0] = float("inf")
    with pytest.raises(NumericalError, match=r"teacher-fold1.*epoch 1\b"):
        run_fit((x_bad, y_train, x_val, y_val), name="teacher-fold1")


# --- augmentation ------------------------------------------------------------------------------


def test_augmentation_is_drawn_fresh_every_epoch(data):
    x_train = data[0]
    seen = []

    def record(x, generator):
        state = generator.get_state().clone()
        noise = torch.rand(len(x), generator=generator)
        seen.append({"x": x.clone(), "state": state, "noise": noise})
        return x

    cfg = TrainConfig(epochs=4, batch_size=64, lr=1e-2)
    _, _, history = run_fit(data, cfg=cfg, augment=record)
    assert len(seen) == len(history) == 4  # once per epoch
    for call in seen:  # always the original training set, never a previous epoch's draw
        assert torch.equal(call["x"], x_train)
    for i in range(len(seen)):
        for j in range(i + 1, len(seen)):
            assert not torch.equal(seen[i]["state"], seen[j]["state"])
            assert not torch.equal(seen[i]["noise"], seen[j]["noise"])


def test_model_trains_on_augmented_inputs_and_validates_on_plain(data):
    """An augmentation that negates the inputs teaches the mirrored rule: the un-augmented
    validation set is then classified almost always wrongly."""
    _, _, history = run_fit(data, augment=lambda x, g: -x)
    assert max(h["val_accuracy"] for h in history[2:]) < 0.2
    assert all(h["train_loss"] < 0.5 for h in history[2:])


# --- checkpoint --------------------------------------------------------------------------------


def test_checkpoint_contents_and_safe_round_trip(data, tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=32, lr=1e-2, patience=3, lr_patience=1)
    _model, state, history = run_fit(data, cfg=cfg, seed=3)
    ckpt = checkpoint(
        state, "mlp", {"hidden": [16]}, (DIM,), 2, cfg, history, {"model": "mlp", "fold": 1}, seed=3
    )
    for key in ["state_dict", "arch", "params", "input_shape", "num_classes", "training", "history",
                "best_epoch", "best_val_accuracy", "wildcards", "seed"]:
        assert key in ckpt, key
    best_epoch, best_acc = best_of(history)
    assert ckpt["arch"] == "mlp"
    assert ckpt["params"] == {"hidden": [16]}
    assert ckpt["input_shape"] == [DIM]
    assert ckpt["num_classes"] == 2
    assert ckpt["training"] == asdict(cfg)
    assert TrainConfig.from_dict(ckpt["training"]) == cfg
    assert ckpt["history"] == history
    assert ckpt["best_epoch"] == best_epoch
    assert ckpt["best_val_accuracy"] == best_acc
    assert ckpt["wildcards"] == {"model": "mlp", "fold": "1"}
    assert ckpt["seed"] == 3

    path = tmp_path / "model.pt"
    save_tensors(ckpt, path)
    loaded = load_tensors(path)  # weights_only: fails on anything but safe types
    assert loaded.keys() == ckpt.keys()
    for key in ckpt:
        if key != "state_dict":
            assert loaded[key] == ckpt[key], key
    rebuilt = build_model(loaded["arch"], loaded["params"], tuple(loaded["input_shape"]),
                          loaded["num_classes"])
    rebuilt.load_state_dict(loaded["state_dict"])
    x_val, y_val = data[2], data[3]
    assert accuracy(predict(rebuilt, x_val, 1024, CPU), y_val) == loaded["best_val_accuracy"]


def test_weights_only_loading_rejects_unsafe_objects(tmp_path):
    """The round trip above proves something only if load_tensors refuses arbitrary objects."""
    path = tmp_path / "bad.pt"
    torch.save({"cfg": TrainConfig(epochs=1, batch_size=1, lr=0.1)}, path)
    with pytest.raises(ValueError, match="bad.pt"):
        load_tensors(path)


def test_grad_clip_bounds_the_gradient_norm_of_every_step(data, monkeypatch):
    """grad_clip caps the global L2 norm of the gradients the optimizer steps with (the authors'
    ModelNet DeepSets clip at 5); without it the same run steps with larger norms."""
    norms = []
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    run_fit(data, cfg=TrainConfig(epochs=2, batch_size=32, lr=1e-2))
    unclipped, norms[:] = list(norms), []
    run_fit(data, cfg=TrainConfig(epochs=2, batch_size=32, lr=1e-2, grad_clip=0.05))
    assert max(unclipped) > 0.1
    assert max(norms) <= 0.05 * (1 + 1e-5)
    assert len(norms) == len(unclipped)


# --- precision: bfloat16 autocast of the training steps ------------------------------------------


def _fit_recording_dtypes(data, precision, loss_fn=F.cross_entropy, targets=None):
    """fit() with ``precision``; returns (model, state, history, dtypes of the first Linear's output
    and of the logits the loss received, per training step)."""
    x_train, y_train, x_val, y_val = data
    generator = seed_everything(0)
    model = build_model("mlp", {"hidden": [16]}, (DIM,), 2)
    seen = {"hidden": set(), "loss_input": set()}
    first_linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    first_linear.register_forward_hook(
        lambda mod, inp, out: seen["hidden"].add(out.dtype) if mod.training else None
    )

    def recording_loss(logits, target):
        seen["loss_input"].add(logits.dtype)
        return loss_fn(logits, target)

    cfg = TrainConfig(epochs=4, batch_size=32, lr=1e-2)
    state, history = fit(
        model, x_train, y_train if targets is None else targets, x_val, y_val, outputs_loss(recording_loss), cfg,
        generator, CPU, precision=precision,
    )
    return model, state, history, seen


def test_bf16_is_not_used_on_the_cpu_by_default(data):
    """precision=bf16 acts only on GPUs: on the CPU the run is exactly the float32 run."""
    _, state32, hist32, _seen32 = _fit_recording_dtypes(data, "float32")
    _, state16, hist16, seen16 = _fit_recording_dtypes(data, "bf16")
    assert seen16["hidden"] == {torch.float32}
    for k in state32:
        torch.testing.assert_close(state16[k], state32[k], rtol=0, atol=0)
    assert _without_seconds(hist16) == _without_seconds(hist32)


def test_bf16_autocast_runs_the_forward_pass_in_bfloat16(data, monkeypatch):
    """Where bf16 is enabled (the CPU is enabled here in place of a GPU): the layers compute in
    bfloat16, the loss gets float32 logits, the weights and the validation stay float32, and the
    model still learns; the result differs from float32 (so the switch really switches)."""
    from kdinv import training

    monkeypatch.setattr(training, "AUTOCAST_DEVICE_TYPES", ("cuda", "cpu"))
    _, state32, _, _ = _fit_recording_dtypes(data, "float32")
    model, state16, hist16, seen16 = _fit_recording_dtypes(data, "bf16")
    assert seen16["hidden"] == {torch.bfloat16}
    assert seen16["loss_input"] == {torch.float32}
    assert all(v.dtype == torch.float32 for v in state16.values() if v.is_floating_point())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert max(h["val_accuracy"] for h in hist16) > 0.9
    assert any(not torch.equal(state16[k], state32[k]) for k in state32)
    # validation (predict) runs outside autocast: float32 logits, identical to a float32 pass
    x_val = data[2]
    model.load_state_dict(state16)
    logits = predict(model, x_val, 64, CPU)
    assert logits.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(logits, model.eval()(x_val), rtol=0, atol=0)


def test_bf16_distillation_gets_float32_logits_into_the_kd_loss(data, monkeypatch):
    from kdinv import training
    from kdinv.distill.losses import kd_loss

    monkeypatch.setattr(training, "AUTOCAST_DEVICE_TYPES", ("cuda", "cpu"))
    teacher = torch.randn(len(data[0]), 2, generator=torch.Generator().manual_seed(3))
    teacher[:, 0] += 4 * (data[1] == 0)
    _, _, hist, seen = _fit_recording_dtypes(
        data, "bf16", loss_fn=lambda s, t: kd_loss(s, t, temperature=4.0), targets=teacher
    )
    assert seen["hidden"] == {torch.bfloat16} and seen["loss_input"] == {torch.float32}
    assert all(math.isfinite(h["train_loss"]) for h in hist)


def test_unknown_precision_is_refused(data):
    with pytest.raises(ValueError, match="precision must be one of"):
        _fit_recording_dtypes(data, "fp16")
