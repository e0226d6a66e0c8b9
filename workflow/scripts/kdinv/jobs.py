"""One function per workflow job: what each Snakemake script calls, with paths and plain values.

- :func:`train_model`: supervised training of one model on one fold, plain or on transformed
  data; also writes the model's logits on the whole (un-transformed) training split, the cache
  every distillation from this model reuses (DECISIONS.md: computed once per teacher and fold).
- :func:`distill_student`: one distillation (teacher, student, temperature, fold) from that cache.
- :func:`evaluate_model`: the paper's metrics on the held-out test split.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from kdinv import metrics
from kdinv.datasets import (
    load_fold,
    load_fold_scaling,
    load_split,
    load_tensors,
    make_augmentation,
    make_transform,
    save_tensors,
)
from kdinv.losses import kd_loss
from kdinv.models import build_model
from kdinv.scaling import Standardized
from kdinv.training import TrainConfig, checkpoint, fit, pick_device, predict, seed_everything

log = logging.getLogger(__name__)


def _resume_file(out_model) -> Path:
    """Where a job keeps its resume state: beside its checkpoint, not a declared output, so it
    survives a failed or killed job (Snakemake deletes only declared outputs)."""
    return Path(out_model).with_name("resume.pt")


def _fingerprint(*parts) -> str:
    """Identifies a job's configuration, so a resume state is only used by the same run."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _fold_data(train_split, fold_file):
    x, y, num_classes = load_split(train_split)
    train_idx, val_idx = load_fold(fold_file, len(y))
    return x, y, num_classes, train_idx, val_idx


def _build(spec: dict, input_shape, num_classes: int, scaling: dict | None) -> torch.nn.Module:
    """The model of a config entry, wrapped in the fold's fixed input scaling when it has one."""
    model = build_model(spec["arch"], spec["params"], tuple(input_shape), num_classes)
    return model if scaling is None else Standardized(model, scaling["center"], scaling["scale"])


def _with_scaling(ckpt: dict, scaling: dict | None) -> dict:
    ckpt["input_scaling"] = None if scaling is None else {k: v.clone() for k, v in scaling.items()}
    return ckpt


def train_model(
    train_split: str | Path,
    fold_file: str | Path,
    model_spec: dict,
    symmetry: dict | None,
    seed: int,
    device: str,
    out_model: str | Path,
    out_logits: str | Path,
    wildcards: dict,
    resume_every: int = 1,
    precision: str = "float32",
    resume_minutes: float = 0.0,
) -> None:
    """Train ``model_spec`` with cross-entropy on the fold's training part.

    Args:
        model_spec: the config's model entry: ``arch``, ``params``, ``training``.
        symmetry: the row's symmetry entry (``transform`` and its parameters) for augmented
            training, where every epoch sees a fresh random transformation of every sample; None
            trains on the plain data.
        precision: "float32" or "bf16" (bfloat16 autocast of the training steps on a GPU; the
            cached logits and the checkpoint are float32 either way).
    """
    dev = pick_device(device)
    generator = seed_everything(seed)
    x, y, num_classes, train_idx, val_idx = _fold_data(train_split, fold_file)
    scaling = load_fold_scaling(fold_file)
    model = _build(model_spec, x.shape[1:], num_classes, scaling)
    cfg = TrainConfig.from_dict(model_spec["training"])
    name = " ".join(f"{k}={v}" for k, v in wildcards.items())
    state, history = fit(
        model, x[train_idx], y[train_idx], x[val_idx], y[val_idx], F.cross_entropy, cfg, generator, dev,
        augment=make_augmentation(symmetry) if symmetry else None, name=name,
        resume=_resume_file(out_model), resume_every=resume_every, resume_minutes=resume_minutes,
        precision=precision,
        fingerprint=_fingerprint(model_spec, symmetry, seed, wildcards, precision),
    )
    model.load_state_dict(state)
    logits = predict(model, x, cfg.eval_batch_size, dev)
    save_tensors({"logits": logits, "seed": seed, "wildcards": dict(wildcards)}, out_logits)
    save_tensors(
        _with_scaling(
            checkpoint(state, model_spec["arch"], model_spec["params"], tuple(x.shape[1:]), num_classes,
                       cfg, history, wildcards, seed),
            scaling,
        ),
        out_model,
    )
    _resume_file(out_model).unlink(missing_ok=True)


def distill_student(
    train_split: str | Path,
    fold_file: str | Path,
    teacher_logits: str | Path,
    student_spec: dict,
    temperature: float,
    direction: str,
    seed: int,
    device: str,
    out_model: str | Path,
    wildcards: dict,
    resume_every: int = 1,
    precision: str = "float32",
    resume_minutes: float = 0.0,
) -> None:
    """Distil the cached teacher logits into a freshly initialised student (alpha = 1: KD term only).

    The student sees the un-transformed training part of the fold; the student's own
    ``distillation`` block gives the hyperparameters. Validation accuracy against the true labels
    drives early stopping and the best-weights choice, as for every other model.
    """
    dev = pick_device(device)
    generator = seed_everything(seed)
    x, y, num_classes, train_idx, val_idx = _fold_data(train_split, fold_file)
    cached = load_tensors(teacher_logits)["logits"]
    if cached.shape != (len(y), num_classes):
        raise ValueError(
            f"{teacher_logits}: teacher logits of shape {tuple(cached.shape)} do not fit the training "
            f"split ({len(y)} samples, {num_classes} classes)"
        )
    scaling = load_fold_scaling(fold_file)
    model = _build(student_spec, x.shape[1:], num_classes, scaling)
    cfg = TrainConfig.from_dict(student_spec["distillation"])
    loss = partial(kd_loss, temperature=temperature, direction=direction)
    name = " ".join(f"{k}={v}" for k, v in wildcards.items())
    state, history = fit(
        model, x[train_idx], cached[train_idx], x[val_idx], y[val_idx], loss, cfg, generator, dev, name=name,
        resume=_resume_file(out_model), resume_every=resume_every, resume_minutes=resume_minutes,
        precision=precision,
        fingerprint=_fingerprint(student_spec, temperature, direction, seed, wildcards, precision),
    )
    save_tensors(
        _with_scaling(
            checkpoint(state, student_spec["arch"], student_spec["params"], tuple(x.shape[1:]), num_classes,
                       cfg, history, wildcards, seed),
            scaling,
        ),
        out_model,
    )
    _resume_file(out_model).unlink(missing_ok=True)


def load_model(path: str | Path) -> torch.nn.Module:
    """Rebuild a model from its checkpoint, without executing code from the file."""
    ckpt = load_tensors(path)
    model = _build(ckpt, ckpt["input_shape"], ckpt["num_classes"], ckpt.get("input_scaling"))
    model.load_state_dict(ckpt["state_dict"])
    return model


def evaluate_model(
    model_file: str | Path,
    test_split: str | Path,
    symmetries: dict[str, dict],
    im_seed: int,
    references: dict[str, str | Path],
    identifiers: dict,
    device: str,
    batch_size: int,
    out_metrics: str | Path,
    out_logits: str | Path,
) -> "pandas.DataFrame":
    """Accuracy, NLL, ECE and IM of one model on the test split, plus fidelity to its references.

    Args:
        symmetries: name -> transform spec; IM is reported for each, on one transformed copy per
            test sample drawn from a generator seeded with ``im_seed`` (the same copies for every
            model of a fold, so models are compared on identical inputs).
        references: name -> a teacher's test logits file; agreement and KL(P_t ‖ P_s) are reported
            against each (a distilled model's own teacher, and for s' also the row's teacher t).
            Empty for models trained without a teacher.
        identifiers: columns copied into every row (dataset, fold, model, ...).

    Writes one row per (symmetry, reference) to ``out_metrics`` and the test logits [N, C] to
    ``out_logits`` (what a student's evaluation compares against when this model is a teacher).
    """
    import pandas as pd  # only evaluation jobs need pandas; training jobs start faster without it

    dev = pick_device(device)
    x, y, _ = load_split(test_split)
    model = load_model(model_file).to(dev)
    logits = predict(model, x, batch_size, dev)
    base = {
        "accuracy": metrics.accuracy(logits, y),
        "nll": metrics.nll(logits, y),
        "ece": metrics.ece(logits, y),
        "n_test": len(y),
    }
    fidelity = {None: {"agreement": float("nan"), "kl": float("nan")}}
    if references:
        fidelity = {}
        for ref, path in references.items():
            teacher = load_tensors(path)["logits"]
            fidelity[ref] = {
                "agreement": metrics.agreement(logits, teacher),
                "kl": metrics.kl_divergence(teacher, logits),
            }
    rows = []
    for sym_name, spec in symmetries.items():
        generator = torch.Generator().manual_seed(im_seed)
        transformed = make_transform(spec)(x, generator)
        im = metrics.invariance(logits, predict(model, transformed, batch_size, dev))
        for ref, fid in fidelity.items():
            rows.append({**identifiers, "symmetry": sym_name, "reference": ref, **base, "im": im, **fid})
    table = pd.DataFrame(rows)
    save_tensors({"logits": logits}, out_logits)
    Path(out_metrics).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(out_metrics).with_suffix(".tmp.parquet")
    table.to_parquet(tmp, index=False)
    tmp.replace(out_metrics)
    return table
