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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    def from_dict(cls, d: dict) -> TrainConfig:
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
    needs ``CUBLAS_WORKSPACE_CONFIG``, which :func:`kdinv.launch.start.start_job` sets before CUDA
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


@dataclass(frozen=True)
class Resume:
    """Where a training keeps its resume state and when it saves it (:func:`fit`).

    ``path``: the resume state's file (None: no resume state). When it exists and carries the same
    ``fingerprint`` (the run's config, seed and data), training continues from it; it is rewritten
    (atomically) at the end of an epoch once ``every`` epochs and ``minutes`` minutes have passed
    since the job started or last saved it, and when SIGTERM or SIGUSR1 arrives, after which
    :class:`TrainingInterrupted` is raised."""

    path: str | Path | None = None
    every: int = 1
    minutes: float = 0.0
    fingerprint: str = ""


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
    resume: Resume | None = None,
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
        resume: where and when the resume state is saved (:class:`Resume`). It holds the model,
            optimizer, scheduler, every generator (the data generator at the start of the epoch,
            the CPU's and each CUDA device's global one; the steps' own generators are functions
            of (seed, epoch, step)), the early-stopping state and, for a stop inside an epoch, the
            batch to continue from. On the CPU a resumed run ends with exactly the weights of an
            uninterrupted one; on a GPU it replays the same random draws, and the weights are
            bit-identical where every kernel has a deterministic implementation
            (:func:`seed_everything`) and the GPU model is the same.
        precision: "float32", or "bf16" for bfloat16 autocast of the forward pass on a GPU (see
            :func:`autocast`; float32 on the CPU).
        seed: the base of each step's own randomness (:func:`batch_seed`).

    The training and validation data are moved to ``device`` once; inside an epoch nothing is
    copied to the host (the loss is summed on the device and read once per epoch).
    """
    run = _Fit(model.to(device), batch_loss, cfg, generator, device, name, resume or Resume(), precision, seed)
    return run.train(x_train.to(device), targets.to(device), x_val.to(device), y_val, augment)


class _Fit:
    """One run of :func:`fit`: the model, its optimizer and scheduler, the early-stopping state and
    the data generator's state at the start of the epoch, which the resume state saves."""

    def __init__(self, model, batch_loss, cfg: TrainConfig, generator, device, name: str, resume: Resume,
                 precision: str, seed: int):
        self.model, self.batch_loss, self.cfg, self.generator = model, batch_loss, cfg, generator
        self.device, self.name, self.resume, self.precision, self.seed = device, name, resume, precision, seed
        if not isinstance(autocast(device, precision), contextlib.nullcontext):
            log.info("%s: bfloat16 autocast on %s", name, device)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = None
        if cfg.lr_patience is not None:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=cfg.lr_factor, patience=cfg.lr_patience
            )
        self.best_acc, self.best_state, self.best_epoch, self.stale = -math.inf, None, 0, 0
        self.history = []
        self.first_epoch, self.first_batch, self.partial = 1, 0, (0.0, 0)
        self.epoch_generator_state = generator.get_state()
        saved = _load_resume(resume.path, resume.fingerprint, name)
        if saved is not None:
            self._restore(saved)
        self.last_save = {"epoch": self.first_epoch - 1, "time": time.monotonic()}

    def _restore(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"], self.name)
        self.epoch_generator_state = saved["generator"]
        self.best_acc, self.best_epoch, self.stale = saved["best_acc"], saved["best_epoch"], saved["stale"]
        self.best_state, self.history = saved["best_state"], saved["history"]
        self.first_epoch, self.first_batch = saved["epoch"], saved["batch"]
        self.partial = (saved["loss_sum"], saved["seen"])
        log.info("%s: resuming at epoch %d, batch %d (from %s)", self.name, self.first_epoch, self.first_batch,
                 self.resume.path)

    def _save_due(self, epoch: int) -> bool:
        """A save at the end of ``epoch``: ``every`` epochs and ``minutes`` since the last."""
        return (
            epoch - self.last_save["epoch"] >= self.resume.every
            and time.monotonic() - self.last_save["time"] >= self.resume.minutes * 60
        )

    def _save(self, epoch: int, batch: int, gen_state, loss_sum: float, seen: int) -> None:
        if self.resume.path is None:
            return
        self.last_save.update(epoch=epoch - 1, time=time.monotonic())
        save_tensors(
            {
                "fingerprint": self.resume.fingerprint,
                "epoch": epoch,
                "batch": batch,
                "generator": gen_state,
                "loss_sum": loss_sum,
                "seen": seen,
                "rng": rng_state(),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "best_acc": self.best_acc,
                "best_epoch": self.best_epoch,
                "stale": self.stale,
                "best_state": self.best_state,
                "history": self.history,
            },
            self.resume.path,
        )

    def train(self, x_train, targets, x_val, y_val, augment) -> tuple[dict, list[dict]]:
        cfg, name = self.cfg, self.name
        with _StopSignals() as stop:
            for epoch in range(self.first_epoch, cfg.epochs + 1):
                start = time.perf_counter()
                train_loss = self._epoch(epoch, x_train, targets, augment, stop)
                val_acc, val_loss, improved = self._validate(epoch, x_val, y_val)
                self._record(epoch, train_loss, val_loss, val_acc, improved, time.perf_counter() - start)
                if cfg.patience is not None and self.stale >= cfg.patience:
                    log.info("%s: early stop after epoch %d (best epoch %d)", name, epoch, self.best_epoch)
                    break
                self.epoch_generator_state = self.generator.get_state()
                if self._save_due(epoch) or stop.received:
                    self._save(epoch + 1, 0, self.epoch_generator_state, 0.0, 0)
                if stop.received:
                    raise TrainingInterrupted(
                        f"{name}: {stop.received} after epoch {epoch}; resume state saved to {self.resume.path}"
                    )
        return self.best_state, self.history

    def _epoch(self, epoch: int, x_train, targets, augment, stop) -> float:
        """One pass over the training data (from the batch a resumed run stopped at); returns the
        mean training loss. A stop signal saves the resume state after the current step."""
        cfg, device, n = self.cfg, self.device, len(x_train)
        self.model.train()
        self.generator.set_state(self.epoch_generator_state)
        inputs = augment(x_train, self.generator) if augment is not None else x_train
        order = torch.randperm(n, generator=self.generator).to(device)
        total, seen = torch.full((), self.partial[0], device=device), self.partial[1]
        batches = range(self.first_batch * cfg.batch_size, n, cfg.batch_size)
        self.first_batch, self.partial = 0, (0.0, 0)
        for i in batches:
            idx = order[i : i + cfg.batch_size]
            step = i // cfg.batch_size
            batch = Batch(inputs[idx], targets[idx], idx, epoch, step, batch_seed(self.seed, epoch, step),
                          device, self.precision)  # fmt: skip
            loss = self._step(batch)
            total += loss.detach() * len(idx)
            seen += len(idx)
            if stop.received:
                self._save(epoch, step + 1, self.epoch_generator_state, total.item(), seen)
                raise TrainingInterrupted(
                    f"{self.name}: {stop.received} at epoch {epoch}; resume state saved to {self.resume.path}"
                )
        train_loss = (total / seen).item()  # one host sync per epoch
        if not math.isfinite(train_loss):
            raise NumericalError(f"{self.name}: training loss is {train_loss} at epoch {epoch}; stopping")
        return train_loss

    def _step(self, batch: Batch) -> torch.Tensor:
        loss = self.batch_loss(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return loss

    def _validate(self, epoch: int, x_val, y_val) -> tuple[float, float, bool]:
        """Validation accuracy and loss; the LR schedule and the best weights follow the accuracy."""
        val_logits = predict(self.model, x_val, self.cfg.eval_batch_size, self.device)
        val_acc = accuracy(val_logits, y_val)
        val_loss = F.cross_entropy(val_logits, y_val).item()
        if self.scheduler is not None:
            self.scheduler.step(val_acc)
        improved = val_acc > self.best_acc
        if improved:
            self.best_acc, self.best_epoch, self.stale = val_acc, epoch, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        else:
            self.stale += 1
        return val_acc, val_loss, improved

    def _record(self, epoch, train_loss, val_loss, val_acc, improved, seconds) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        self.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                             "val_accuracy": val_acc, "lr": lr, "seconds": seconds})
        log.info(
            "%s epoch %d/%d train_loss %.5f val_loss %.5f val_acc %.4f%s lr %.2g %.1fs",
            self.name, epoch, self.cfg.epochs, train_loss, val_loss, val_acc, " *" if improved else "", lr, seconds,
        )


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
