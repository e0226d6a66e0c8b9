"""The checkpoint format: what a trained model's ``model.pt`` holds, and how a model is rebuilt.

A checkpoint is a dict that can rebuild the model and says how it was made: the best-validation
``state_dict``, ``arch`` and ``params``, the input shape and class count, the training block, the
per-epoch history and best epoch, the job's wildcards and seed, the torch version, the fold's
``input_scaling`` (None, or the fixed statistics of :class:`kdinv.models.wrappers.Standardized`)
and ``group_average`` (None, the finite group of :class:`kdinv.models.wrappers.GroupAveraged`, or
the rotation group of :class:`kdinv.models.wrappers.FrameAveraged`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from kdinv.io import load_tensors
from kdinv.models.capabilities import ARCH_INPUTS
from kdinv.models.registry import build_model
from kdinv.models.wrappers import Standardized, averaged
from kdinv.symmetry.catalog import TRANSFORM_INFO, averaging_groups
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
    *,
    group_average: str | None = None,
) -> dict:
    """A checkpoint that can rebuild the model and says how it was made (``group_average``: the
    model entry's, so that :func:`load_model` wraps the backbone the same way)."""
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
        "group_average": group_average,
    }


def build_from_spec(spec: dict, input_shape, num_classes: int, scaling: dict | None) -> torch.nn.Module:
    """The model of a config entry (or checkpoint), wrapped in the fold's fixed input scaling when
    it has one, and averaged over the group ``spec["group_average"]`` when it names one (over its orbit
    for a finite group, over the cloud's PCA frame for a continuous rotation group).

    Order: ``GroupAveraged(Standardized(backbone))`` (or ``FrameAveraged``). The group acts on the raw inputs, as the
    symmetry transforms of IM and augmentation do, so the average is exactly invariant to them
    whatever the scaling statistics; scaling first would need per-feature statistics that the
    group leaves unchanged (equal scales of the two rotated coordinates, a centre at zero).
    """
    model = build_model(spec["arch"], spec["params"], tuple(input_shape), num_classes)
    if scaling is not None:
        model = Standardized(model, scaling["center"], scaling["scale"])
    group = spec.get("group_average")
    if group:
        if group not in averaging_groups():
            raise ValueError(f"group_average: {group!r} is neither a finite group nor a rotation group with a frame")
        if not TRANSFORM_INFO[group].acts_on & ARCH_INPUTS.get(spec["arch"], frozenset()):
            raise ValueError(
                f"group_average: {group!r} acts on {sorted(TRANSFORM_INFO[group].acts_on)}, which "
                f"{spec['arch']!r} does not read ({sorted(ARCH_INPUTS[spec['arch']])})"
            )
        model = averaged(model, group)
    return model


def with_scaling(ckpt: dict, scaling: dict | None) -> dict:
    ckpt["input_scaling"] = None if scaling is None else {k: v.clone() for k, v in scaling.items()}
    return ckpt


def load_model(path: str | Path) -> torch.nn.Module:
    """Rebuild a model from its checkpoint, without executing code from the file."""
    ckpt = load_tensors(path)
    model = build_from_spec(ckpt, ckpt["input_shape"], ckpt["num_classes"], ckpt.get("input_scaling"))
    model.load_state_dict(ckpt["state_dict"])
    return model
