"""Training loop shared by supervised training and distillation.

Data are tensors held on the device and batched by index (no per-sample Python, no DataLoader).
Adam, optional ReduceLROnPlateau on validation accuracy, early stopping on validation accuracy,
and the best-validation weights are kept (DECISIONS.md "Checkpoints keep the best-validation
weights"). One log line per epoch.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

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

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**d)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (init, dropout) and return a generator for data order/augmentation."""
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Logits [N, C] of ``model`` in eval mode on ``x``, in float32 on the CPU."""
    model.eval()
    out = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out)


class NumericalError(RuntimeError):
    """A non-finite loss: the run is broken and must not write a checkpoint."""


def fit(
    model: torch.nn.Module,
    x_train: torch.Tensor,
    targets: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    name: str = "model",
) -> tuple[dict, list[dict]]:
    """Train ``model`` and return (best state_dict, per-epoch history).

    Args:
        x_train: [N, ...] training inputs; ``targets`` [N] labels or [N, C] teacher logits, whatever
            ``loss_fn(output, target_batch)`` expects.
        x_val, y_val: validation inputs and labels; val accuracy drives early stopping, the LR
            schedule and the choice of the best weights.
        augment: applied to the whole training set once per epoch (a fresh draw each epoch).
        name: how the log and errors name this run (model, fold).
    """
    model.to(device)
    x_train, targets = x_train.to(device), targets.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = None
    if cfg.lr_patience is not None:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.lr_factor, patience=cfg.lr_patience
        )
    n = len(x_train)
    best_acc, best_state, best_epoch, stale = -math.inf, None, 0, 0
    history = []
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        model.train()
        inputs = augment(x_train, generator) if augment is not None else x_train
        order = torch.randperm(n, generator=generator).to(device)
        total, seen = torch.zeros((), device=device), 0
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = loss_fn(model(inputs[idx]), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
            seen += len(idx)
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
    return best_state, history


def checkpoint(
    state_dict: dict,
    arch: str,
    params: dict,
    input_shape: tuple[int, ...],
    num_classes: int,
    cfg: TrainConfig,
    history: list[dict],
    wildcards: dict,
    seed: int,
) -> dict:
    """A checkpoint that can rebuild the model and says how it was made."""
    best = max(history, key=lambda h: h["val_accuracy"])
    return {
        "state_dict": state_dict,
        "arch": arch,
        "params": params,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "training": asdict(cfg),
        "history": history,
        "best_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],
        "wildcards": {k: str(v) for k, v in wildcards.items()},
        "seed": seed,
        "torch_version": str(torch.__version__),
    }
