"""Training loop shared by supervised training and distillation.

Data are tensors held on the device and batched by index (no per-sample Python, no DataLoader).
Adam, optional ReduceLROnPlateau on validation accuracy, early stopping on validation accuracy,
and the best-validation weights are kept (docs/decisions.md). One log line per epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from kdinv.io import load_tensors, save_tensors
from kdinv.metrics import accuracy

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Hyperparameters of one training or distillation (the config's ``training`` blocks)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    patience: int | None = None  # early stopping: epochs without a better val accuracy
    lr_patience: int | None = None  # ReduceLROnPlateau(mode="max") on val accuracy; None = constant
    lr_factor: float = 0.1
    eval_batch_size: int = 1024
    grad_clip: float | None = None  # global L2 norm of the gradients is clipped to this; None = off

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**d)


PRECISIONS = ("float32", "bf16")

AUTOCAST_DEVICE_TYPES = ("cuda",)
"""Device types on which ``precision="bf16"`` turns on autocast. Not the CPU: bfloat16 matmuls are
emulated, and slower than float32, on CPUs without AMX/AVX512-BF16 (tests add "cpu" here)."""


def autocast(device: torch.device, precision: str):
    """The context of a training step's forward pass: bfloat16 autocast for ``precision="bf16"``
    on a device that supports it, else nothing (float32).

    Autocast runs matmuls and convolutions in bfloat16 and keeps reductions, softmax and BatchNorm
    in float32; the losses (`kdinv.distill.losses`, cross-entropy) take the logits as float32, and DGCNN's
    kNN distances are computed in float32 with autocast off (`kdinv.models.knn_indices`), so the
    neighbour choice is that of float32. Validation, the cached teacher logits and all evaluation
    (`predict`) run without autocast.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float32" or device.type not in AUTOCAST_DEVICE_TYPES:
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("precision bf16: %s has no bfloat16 support; training in float32", device)
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """``device`` for a job's log: a GPU with its name (``cuda:0 (NVIDIA H200)``), else its type."""
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNGs (init, dropout; the CPU's and every CUDA device's), ask for
    deterministic kernels, and return a generator for data order and augmentation.

    On a GPU: cuDNN's autotuner is off and PyTorch's deterministic implementations are used
    where they exist (``warn_only``: an operation without one warns instead of failing); cuBLAS
    needs ``CUBLAS_WORKSPACE_CONFIG``, which :func:`kdinv.runtime.start_job` sets before CUDA
    starts. The CPU is deterministic without them.
    """
    torch.manual_seed(seed)  # seeds the CUDA generators too
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def cuda_devices() -> int:
    """CUDA devices this process can use (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def rng_state() -> dict:
    """Every global generator a training step draws from: the CPU's and, with CUDA, each CUDA
    device's (dropout on a GPU draws from the device's generator)."""
    cuda = torch.cuda.get_rng_state_all() if cuda_devices() else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict, name: str = "model") -> None:
    """Restore :func:`rng_state`'s generators. A state saved on a GPU and resumed without one (or
    the reverse) cannot replay the same dropout masks: the run continues, with a warning."""
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    here = cuda_devices()
    if cuda is not None and here:
        for device, device_state in enumerate(cuda[:here]):
            torch.cuda.set_rng_state(device_state, device)
        if len(cuda) != here:
            log.warning("%s: resume state saved with %d CUDA devices, %d here", name, len(cuda), here)
    elif cuda is not None or here:
        log.warning("%s: the resume state was saved %s a GPU and resumes %s one: random draws on the "
                    "GPU (dropout) are not those of an uninterrupted run", name,
                    "on" if cuda is not None else "without", "on" if here else "without")


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Logits [N, C] of ``model`` in eval mode on ``x``, in float32 on the CPU (one copy to the host
    at the end, not one per batch).

    The model computes where its inputs go: it is put on ``device`` (a no-op when it is there
    already, so a job that moved it once copies nothing here), and it stays there."""
    model.to(device).eval()
    out = [model(x[i : i + batch_size].to(device)).float() for i in range(0, len(x), batch_size)]
    return torch.cat(out).cpu()


class NumericalError(RuntimeError):
    """A non-finite loss: the run is broken and must not write a checkpoint."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM or SIGUSR1 arrived (a scheduler's time limit or preemption): the resume state was
    saved and the job exits non-zero so that the scheduler, or the next run, resumes it."""


class _StopSignals:
    """Turns SIGTERM and SIGUSR1 into a flag that the training loop checks after every batch."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.received = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


BatchLoss = Callable[[torch.nn.Module, "Batch"], torch.Tensor]
"""A training step's loss: ``batch_loss(model, batch)`` -> a scalar to minimise. It runs the model
(through ``batch.forward``) as often as it needs, and any other module (a teacher) too."""


def batch_seed(seed: int, epoch: int, step: int) -> int:
    """The seed of one step's own randomness: a function of (seed, epoch, step) only, so a run
    resumed inside an epoch draws exactly what an uninterrupted one draws."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{step}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


@dataclass
class Batch:
    """One training step's data, as :func:`fit` hands it to the batch loss.

    Attributes:
        inputs: [B, ...] the step's inputs (this epoch's transformed copies under ``augment``).
        targets: [B] labels or [B, C] cached teacher logits, the rows of fit's ``targets``.
        index: [B] the samples' indices into the training data.
        epoch, step: 1-based epoch, 0-based step within it.
        seed: the step's seed (:func:`batch_seed`); :attr:`generator` is a CPU generator seeded
            with it, for the step's own draws (transforms, mixing coefficients).
        precision, device: what :meth:`forward` runs under.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    index: torch.Tensor
    epoch: int
    step: int
    seed: int
    device: torch.device
    precision: str = "float32"
    _generator: torch.Generator | None = None

    @property
    def generator(self) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        return self._generator

    def forward(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``module(x)`` under the run's precision (bfloat16 autocast on a GPU for "bf16"), as
        float32 logits."""
        with autocast(self.device, self.precision):
            out = module(x)
        return out.float()


def outputs_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> BatchLoss:
    """The batch loss of one forward pass of the model: ``loss_fn(model(inputs), targets)`` (e.g.
    cross-entropy on the labels, or the KD loss on cached teacher logits)."""

    def batch_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return loss_fn(batch.forward(model, batch.inputs), batch.targets)

    return batch_loss


def fit(
    model: torch.nn.Module,
    x_train: torch.Tensor,
    targets: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    batch_loss: BatchLoss,
    cfg: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    name: str = "model",
    resume: str | Path | None = None,
    resume_every: int = 1,
    fingerprint: str = "",
    resume_minutes: float = 0.0,
    precision: str = "float32",
    seed: int = 0,
) -> tuple[dict, list[dict]]:
    """Train ``model`` and return (best state_dict, per-epoch history).

    Args:
        x_train: [N, ...] training inputs; ``targets`` [N] labels or [N, C] teacher logits, whatever
            the batch loss expects.
        batch_loss: ``batch_loss(model, batch)`` -> the step's loss (:class:`Batch`); e.g.
            ``outputs_loss(F.cross_entropy)``. It may run the model several times, or a teacher.
        x_val, y_val: validation inputs and labels; val accuracy drives early stopping, the LR
            schedule and the choice of the best weights.
        augment: applied to the whole training set once per epoch (a fresh draw each epoch).
        name: how the log and errors name this run (model, fold).
        resume: path of the resume state. When it exists and carries the same ``fingerprint``,
            training continues from it; it is rewritten (atomically) at the end of an epoch once
            ``resume_every`` epochs and ``resume_minutes`` minutes have passed since the job
            started or last saved it, and when SIGTERM or SIGUSR1 arrives, after which
            TrainingInterrupted is raised.
            The state holds the model, optimizer, scheduler, every generator (the data
            generator at the start of the epoch, the CPU's and each CUDA device's global one; the
            steps' own generators are functions of (seed, epoch, step)), the early-stopping state
            and, for a stop inside an epoch, the batch to continue from. On the CPU a resumed run
            ends with exactly the weights of an uninterrupted one; on a GPU it replays the same
            random draws, and the weights are bit-identical where every kernel has a deterministic
            implementation (:func:`seed_everything`) and the GPU model is the same.
        fingerprint: identifies the run (config, seed, data); a resume state of another run is
            ignored.
        precision: "float32", or "bf16" for bfloat16 autocast of the forward pass on a GPU (see
            :func:`autocast`; float32 on the CPU).
        seed: the base of each step's own randomness (:func:`batch_seed`).

    The training and validation data are moved to ``device`` once; inside an epoch nothing is
    copied to the host (the loss is summed on the device and read once per epoch).
    """
    model.to(device)
    x_train, targets, x_val = x_train.to(device), targets.to(device), x_val.to(device)
    if not isinstance(autocast(device, precision), contextlib.nullcontext):
        log.info("%s: bfloat16 autocast on %s", name, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = None
    if cfg.lr_patience is not None:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.lr_factor, patience=cfg.lr_patience
        )
    n = len(x_train)
    best_acc, best_state, best_epoch, stale = -math.inf, None, 0, 0
    history = []
    first_epoch, first_batch, partial = 1, 0, (0.0, 0)
    epoch_generator_state = generator.get_state()
    saved = _load_resume(resume, fingerprint, name)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"], name)
        epoch_generator_state = saved["generator"]
        best_acc, best_epoch, stale = saved["best_acc"], saved["best_epoch"], saved["stale"]
        best_state, history = saved["best_state"], saved["history"]
        first_epoch, first_batch = saved["epoch"], saved["batch"]
        partial = (saved["loss_sum"], saved["seen"])
        log.info("%s: resuming at epoch %d, batch %d (from %s)", name, first_epoch, first_batch, resume)

    last_save = {"epoch": first_epoch - 1, "time": time.monotonic()}

    def save_due(epoch):
        """A save at the end of ``epoch``: resume_every epochs and resume_minutes since the last."""
        return (
            epoch - last_save["epoch"] >= resume_every
            and time.monotonic() - last_save["time"] >= resume_minutes * 60
        )

    def save_resume(epoch, batch, gen_state, loss_sum, seen):
        if resume is None:
            return
        last_save.update(epoch=epoch - 1, time=time.monotonic())
        save_tensors(
            {
                "fingerprint": fingerprint,
                "epoch": epoch,
                "batch": batch,
                "generator": gen_state,
                "loss_sum": loss_sum,
                "seen": seen,
                "rng": rng_state(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "best_acc": best_acc,
                "best_epoch": best_epoch,
                "stale": stale,
                "best_state": best_state,
                "history": history,
            },
            resume,
        )

    with _StopSignals() as stop:
        for epoch in range(first_epoch, cfg.epochs + 1):
            start = time.perf_counter()
            model.train()
            generator.set_state(epoch_generator_state)
            inputs = augment(x_train, generator) if augment is not None else x_train
            order = torch.randperm(n, generator=generator).to(device)
            total, seen = torch.full((), partial[0], device=device), partial[1]
            batches = range(first_batch * cfg.batch_size, n, cfg.batch_size)
            first_batch, partial = 0, (0.0, 0)
            for i in batches:
                idx = order[i : i + cfg.batch_size]
                step = i // cfg.batch_size
                batch = Batch(inputs[idx], targets[idx], idx, epoch, step, batch_seed(seed, epoch, step),
                              device, precision)  # fmt: skip
                loss = batch_loss(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                total += loss.detach() * len(idx)
                seen += len(idx)
                if stop.received:
                    save_resume(epoch, i // cfg.batch_size + 1, epoch_generator_state, total.item(), seen)
                    raise TrainingInterrupted(
                        f"{name}: {stop.received} at epoch {epoch}; resume state saved to {resume}"
                    )
            train_loss = (total / seen).item()  # one host sync per epoch
            if not math.isfinite(train_loss):
                raise NumericalError(f"{name}: training loss is {train_loss} at epoch {epoch}; stopping")
            val_logits = predict(model, x_val, cfg.eval_batch_size, device)
            val_acc = accuracy(val_logits, y_val)
            val_loss = F.cross_entropy(val_logits, y_val).item()
            if scheduler is not None:
                scheduler.step(val_acc)
            improved = val_acc > best_acc
            if improved:
                best_acc, best_epoch, stale = val_acc, epoch, 0
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                stale += 1
            seconds = time.perf_counter() - start
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_accuracy": val_acc,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": seconds,
                }
            )
            log.info(
                "%s epoch %d/%d train_loss %.5f val_loss %.5f val_acc %.4f%s lr %.2g %.1fs",
                name, epoch, cfg.epochs, train_loss, val_loss, val_acc,
                " *" if improved else "", optimizer.param_groups[0]["lr"], seconds,
            )
            if cfg.patience is not None and stale >= cfg.patience:
                log.info("%s: early stop after epoch %d (best epoch %d)", name, epoch, best_epoch)
                break
            epoch_generator_state = generator.get_state()
            if save_due(epoch) or stop.received:
                save_resume(epoch + 1, 0, epoch_generator_state, 0.0, 0)
            if stop.received:
                raise TrainingInterrupted(
                    f"{name}: {stop.received} after epoch {epoch}; resume state saved to {resume}"
                )
    return best_state, history


def _load_resume(path: str | Path | None, fingerprint: str, name: str) -> dict | None:
    if path is None or not Path(path).exists():
        return None
    saved = load_tensors(path)
    if saved.get("fingerprint") != fingerprint:
        log.warning("%s: ignoring %s, it belongs to another configuration of this job", name, path)
        return None
    if "rng" not in saved:
        log.warning("%s: ignoring %s, it was written by an older version of this workflow", name, path)
        return None
    return saved


