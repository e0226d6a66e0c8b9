"""The checkpoint format: what a trained model's ``model.pt`` holds, and how a model is rebuilt.

A checkpoint is a dict that can rebuild the model and says how it was made: the best-validation
``state_dict``, ``arch`` and ``params``, the input shape and class count, the training block, the
per-epoch history and best epoch, the job's wildcards and seed, the torch version, and the fold's
``input_scaling`` (None, or the fixed statistics of :class:`kdinv.models.wrappers.Standardized`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from kdinv.io import load_tensors
from kdinv.models.registry import build_model
from kdinv.models.wrappers import Standardized
from kdinv.training import TrainConfig


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


def build_from_spec(spec: dict, input_shape, num_classes: int, scaling: dict | None) -> torch.nn.Module:
    """The model of a config entry, wrapped in the fold's fixed input scaling when it has one."""
    model = build_model(spec["arch"], spec["params"], tuple(input_shape), num_classes)
    return model if scaling is None else Standardized(model, scaling["center"], scaling["scale"])


def with_scaling(ckpt: dict, scaling: dict | None) -> dict:
    ckpt["input_scaling"] = None if scaling is None else {k: v.clone() for k, v in scaling.items()}
    return ckpt


def load_model(path: str | Path) -> torch.nn.Module:
    """Rebuild a model from its checkpoint, without executing code from the file."""
    ckpt = load_tensors(path)
    model = build_from_spec(ckpt, ckpt["input_shape"], ckpt["num_classes"], ckpt.get("input_scaling"))
    model.load_state_dict(ckpt["state_dict"])
    return model
