"""Resumable training: a job killed mid-run (SIGKILL) or told to stop (SIGTERM, as SLURM does
before a time limit) resumes from its saved state and ends with exactly the weights, history and
logits of an uninterrupted run (CPU, deterministic)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import toy_image_folds

from kdinv.io import load_tensors
from kdinv.training import Resume, TrainConfig, fit, outputs_loss, seed_everything

ROOT = Path(__file__).resolve().parents[2]

JOB = """
import logging, sys
sys.path.insert(0, {scripts!r})
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import torch
torch.set_num_threads(1)
from kdinv.jobs import train_model
spec = {{"arch": "mlp", "params": {{"hidden": [512, 512]}},
        "training": {{"epochs": 6, "batch_size": 8, "lr": 1e-3}}}}
symmetry = {{"transform": "shift_2d", "max_shift": 2, "background": -1.0, "augment_identity_prob": 0.2}}
train_model({data!r} + "/train.pt", {data!r} + "/fold0.pt", spec, symmetry, 7, "cpu",
            {out!r} + "/model.pt", {out!r} + "/train_logits.pt", {{"model": "mlp", "fold": "0"}})
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return toy_image_folds(tmp_path_factory.mktemp("data"))


def start(data: Path, out: Path) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    code = JOB.format(scripts=str(ROOT / "workflow/scripts"), data=str(data), out=str(out))
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return err


def wait_for_epoch(resume: Path, epoch: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the job ended before it could be interrupted"
        if resume.exists() and load_tensors(resume)["epoch"] >= epoch:
            return
        time.sleep(0.05)
    raise AssertionError(f"{resume} never reached epoch {epoch}")


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    finish(start(data, out))
    assert not (out / "resume.pt").exists()  # removed once the job succeeded
    return load_tensors(out / "model.pt"), load_tensors(out / "train_logits.pt")["logits"]


def assert_same_run(out: Path, reference) -> None:
    ckpt, logits = load_tensors(out / "model.pt"), load_tensors(out / "train_logits.pt")["logits"]
    ref_ckpt, ref_logits = reference
    for key, value in ref_ckpt["state_dict"].items():
        assert torch.equal(ckpt["state_dict"][key], value), key
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in ckpt["history"]]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in ref_ckpt["history"]]
    assert torch.equal(logits, ref_logits)
    assert not (out / "resume.pt").exists()


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_and_matches(data, reference, tmp_path):
    proc = start(data, tmp_path)
    wait_for_epoch(tmp_path / "resume.pt", 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (tmp_path / "model.pt").exists()
    saved_epoch = load_tensors(tmp_path / "resume.pt")["epoch"]
    err = finish(start(data, tmp_path))
    assert f"resuming at epoch {saved_epoch}" in err
    assert saved_epoch >= 3
    assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_sigterm_saves_exits_nonzero_and_resumes_exactly(data, reference, tmp_path):
    proc = start(data, tmp_path)
    wait_for_epoch(tmp_path / "resume.pt", 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "TrainingInterrupted" in err and "SIGTERM" in err
    saved = load_tensors(tmp_path / "resume.pt")
    assert not (tmp_path / "model.pt").exists()
    err = finish(start(data, tmp_path))
    assert f"resuming at epoch {saved['epoch']}, batch {saved['batch']}" in err
    assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_sigusr1_is_handled_like_sigterm(data, tmp_path):
    proc = start(data, tmp_path)
    wait_for_epoch(tmp_path / "resume.pt", 2, proc)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "SIGUSR1" in err
    assert (tmp_path / "resume.pt").exists()


@pytest.mark.slow
def test_resume_state_of_another_configuration_is_ignored(tmp_path):
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2)

    def run(fingerprint, epochs):
        seed_everything(0)
        model = torch.nn.Linear(4, 2)
        return fit(model, x, y, x, y, outputs_loss(torch.nn.functional.cross_entropy),
                   TrainConfig(**{**cfg.__dict__, "epochs": epochs}), torch.Generator().manual_seed(0),
                   torch.device("cpu"), resume=Resume(tmp_path / "resume.pt", fingerprint=fingerprint))

    run("a", 2)
    assert load_tensors(tmp_path / "resume.pt")["epoch"] == 3
    _, history = run("b", 3)  # another run: starts from scratch
    assert [h["epoch"] for h in history] == [1, 2, 3]
    _, history = run("b", 4)  # the same run: continues after its epoch 3
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


@pytest.mark.slow
def test_resume_state_is_saved_every_resume_every_epochs(tmp_path, monkeypatch):
    from kdinv import training

    saved_epochs = []
    original = training.save_tensors

    def recording(obj, path):
        if Path(path).name == "resume.pt":
            saved_epochs.append(obj["epoch"])
        return original(obj, path)

    monkeypatch.setattr(training, "save_tensors", recording)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    seed_everything(0)
    fit(torch.nn.Linear(4, 2), x, y, x, y, outputs_loss(torch.nn.functional.cross_entropy),
        TrainConfig(epochs=7, batch_size=16, lr=1e-2), torch.Generator().manual_seed(0),
        torch.device("cpu"), resume=Resume(tmp_path / "resume.pt", every=3, fingerprint="f"))
    assert saved_epochs == [4, 7]  # after epochs 3 and 6, each naming the epoch to continue at


@pytest.mark.slow
def test_per_batch_randomness_resumes_exactly_inside_an_epoch(tmp_path):
    """A batch loss that draws its own randomness from ``batch.generator`` (as the distillation
    recipes do: a transform per step, a mixing coefficient) is seeded from (seed, epoch, step)
    only, so a run stopped by SIGTERM inside an epoch and resumed ends with exactly the weights of
    an uninterrupted run; with another seed the weights differ."""
    import os

    from kdinv.training import TrainingInterrupted

    x, y = torch.randn(96, 4), torch.randint(0, 2, (96,))
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-2)
    stop_at = {"epoch": 2, "step": 3}

    def noisy_loss(stop: bool):
        def loss(model, batch):
            noise = torch.randn(batch.inputs.shape, generator=batch.generator)
            if stop and (batch.epoch, batch.step) == (stop_at["epoch"], stop_at["step"]):
                os.kill(os.getpid(), signal.SIGTERM)  # handled after this step: state saved
            return torch.nn.functional.cross_entropy(batch.forward(model, batch.inputs + noise), batch.targets)

        return loss

    def run(loss, resume=None, seed=5):
        seed_everything(0)
        model = torch.nn.Linear(4, 2)
        state, _ = fit(model, x, y, x, y, loss, cfg, torch.Generator().manual_seed(0), torch.device("cpu"),
                       resume=Resume(resume, fingerprint="f"), seed=seed)
        return state

    uninterrupted = run(noisy_loss(False))
    with pytest.raises(TrainingInterrupted):
        run(noisy_loss(True), resume=tmp_path / "resume.pt")
    saved = load_tensors(tmp_path / "resume.pt")
    assert (saved["epoch"], saved["batch"]) == (2, 4)  # inside epoch 2, after its step 3
    resumed = run(noisy_loss(False), resume=tmp_path / "resume.pt")
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key
    other = run(noisy_loss(False), seed=6)
    assert not torch.equal(other["weight"], uninterrupted["weight"])


def test_cuda_generators_are_saved_and_restored(tmp_path, monkeypatch):
    """On a GPU dropout draws from each device's generator: the resume state holds them and a
    resumed run restores them (the CUDA calls are stood in for on the CPU)."""
    from kdinv import training

    fake = [torch.arange(8, dtype=torch.uint8), torch.arange(8, 16, dtype=torch.uint8)]
    restored = {}
    monkeypatch.setattr(training, "cuda_devices", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in fake])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.__setitem__(device, state))

    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))

    def run(epochs):
        seed_everything(0)
        return fit(torch.nn.Linear(4, 2), x, y, x, y, outputs_loss(torch.nn.functional.cross_entropy),
                   TrainConfig(epochs=epochs, batch_size=16, lr=1e-2), torch.Generator().manual_seed(0),
                   torch.device("cpu"), resume=Resume(tmp_path / "resume.pt", fingerprint="f"))

    run(2)
    saved = load_tensors(tmp_path / "resume.pt")["rng"]
    assert [torch.equal(a, b) for a, b in zip(saved["cuda"], fake)] == [True, True]
    assert torch.equal(saved["cpu"], saved["cpu"]) and saved["cpu"].dtype == torch.uint8
    run(3)  # resumes after epoch 2
    assert sorted(restored) == [0, 1]
    assert torch.equal(restored[0], fake[0]) and torch.equal(restored[1], fake[1])
    assert training.rng_state()["cuda"] is not None


def test_a_gpu_state_resumed_without_a_gpu_warns(caplog):
    from kdinv.training import rng_state, set_rng_state

    state = {**rng_state(), "cuda": [torch.zeros(8, dtype=torch.uint8)]}
    with caplog.at_level("WARNING", logger="kdinv.training"):
        set_rng_state(state, "job")
    if not torch.cuda.is_available():
        assert "saved on a GPU and resumes without one" in caplog.text
def test_resume_state_waits_resume_minutes_between_saves(tmp_path, monkeypatch):
    """A job of fast epochs saves its state at most every resume_minutes (here each batch takes a
    minute of a fake clock: 4 batches per epoch, so a save every third epoch at 10 minutes)."""
    import types

    from kdinv import training

    clock = [0.0]
    monkeypatch.setattr(
        training, "time", types.SimpleNamespace(perf_counter=time.perf_counter, monotonic=lambda: clock[0])
    )
    saved = []
    original = training.save_tensors

    def recording(obj, path):
        if Path(path).name == "resume.pt":
            saved.append((obj["epoch"], clock[0]))
        return original(obj, path)

    def loss(outputs, targets):
        clock[0] += 60.0
        return torch.nn.functional.cross_entropy(outputs, targets)

    monkeypatch.setattr(training, "save_tensors", recording)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    seed_everything(0)
    fit(
        torch.nn.Linear(4, 2),
        x,
        y,
        x,
        y,
        outputs_loss(loss),
        TrainConfig(epochs=7, batch_size=16, lr=1e-2),
        torch.Generator().manual_seed(0),
        torch.device("cpu"),
        resume=Resume(tmp_path / "resume.pt", every=1, minutes=10, fingerprint="f"),
    )
    assert saved == [(4, 720.0), (7, 1440.0)]  # after epochs 3 and 6 (minutes 12 and 24)
