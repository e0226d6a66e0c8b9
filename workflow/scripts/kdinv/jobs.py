"""One function per workflow job: what each Snakemake script calls, with paths and plain values.

- :func:`train_model`: supervised training of one model on one fold, plain or on transformed
  data; also writes the model's logits on the whole (un-transformed) training split, the cache
  every distillation from this model reuses (docs/decisions.md: computed once per teacher and fold).
- :func:`distill_student`: one distillation (teacher, student, recipe variant, temperature, fold),
  from that cache where the recipe allows, after the teacher gate.

The evaluation jobs call :func:`kdinv.evaluation.evaluate_runs`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from kdinv import metrics
from kdinv.data.splits import load_fold, load_fold_scaling, load_split
from kdinv.io import load_tensors, save_tensors
from kdinv.models.checkpoint import build_from_spec, checkpoint, load_model, with_scaling
from kdinv.symmetry.transforms import make_augmentation
from kdinv.training import (
    Resume,
    TrainConfig,
    describe_device,
    fit,
    outputs_loss,
    pick_device,
    predict,
    seed_everything,
)

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
    model = build_from_spec(model_spec, x.shape[1:], num_classes, scaling)
    cfg = TrainConfig.from_dict(model_spec["training"])
    name = " ".join(f"{k}={v}" for k, v in wildcards.items())
    log.info("seed %d", seed)
    log.info("%s: training on %s", name, describe_device(dev))
    state, history = fit(
        model, x[train_idx], y[train_idx], x[val_idx], y[val_idx], outputs_loss(F.cross_entropy), cfg, generator, dev,
        augment=make_augmentation(symmetry) if symmetry else None, name=name,
        resume=Resume(_resume_file(out_model), resume_every, resume_minutes,
                      _fingerprint(model_spec, symmetry, seed, wildcards, precision)),
        precision=precision, seed=seed,
    )
    model.load_state_dict(state)
    logits = predict(model, x, cfg.eval_batch_size, dev)
    save_tensors({"logits": logits, "seed": seed, "wildcards": dict(wildcards)}, out_logits)
    save_tensors(
        with_scaling(
            checkpoint(state, model_spec["arch"], model_spec["params"], tuple(x.shape[1:]), num_classes,
                       cfg, history, wildcards, seed, group_average=model_spec.get("group_average")),
            scaling,
        ),
        out_model,
    )
    _resume_file(out_model).unlink(missing_ok=True)


def _load_teacher(path, device: torch.device) -> torch.nn.Module:
    """A teacher from its checkpoint, on ``device`` and in eval mode, without drawing from the
    global generators (building a model initialises weights before the checkpoint's replace
    them). The one copy of its weights to the device in a distillation job: the gate, the cache
    check and the per-batch targets all use this module."""
    with torch.random.fork_rng(devices=[]):
        return load_model(path).to(device).eval()


def distill_student(
    train_split: str | Path,
    fold_file: str | Path,
    teacher_logits: str | Path,
    teacher_model: str | Path,
    test_split: str | Path,
    student_spec: dict,
    temperature: float,
    recipe: dict,
    seed: int,
    device: str,
    out_model: str | Path,
    wildcards: dict,
    gates: dict[str, dict] | None = None,
    gate_seed: int = 0,
    resume_every: int = 1,
    precision: str = "float32",
    resume_minutes: float = 0.0,
) -> None:
    """Distil a teacher into a freshly initialised student by one recipe variant (the distillation
    term only, no cross-entropy on the labels; :func:`kdinv.distill.losses.recipe_loss`).

    First the teacher gate: for each symmetry of ``gates`` (the rows in which the teacher is t or
    t'; :func:`kdinv.config.teacher_gates`) the teacher's IM on the test split must be at most
    1e-4 (in float64 where float32 does not pass), else nothing is trained
    (:class:`kdinv.evaluation.TeacherNotInvariant`).

    Targets: the cached teacher logits on the untransformed training data, except where the
    recipe needs the teacher on other inputs (its ``teacher_every_batch``,
    :class:`kdinv.distill.recipes.Recipe`): ``unless_invariant`` (``augmented``) uses the cache only
    for a teacher that passed the gate for the recipe's symmetry and whose cache matches its
    outputs on transformed training inputs (IM ≤ 1e-4 on a sample), else it runs the teacher on
    every batch; ``always`` (``mixup``) always does. The student's own ``distillation`` block gives
    the hyperparameters; validation accuracy against the true labels drives early stopping and the
    best-weights choice.
    """
    from kdinv.distill.losses import recipe_loss
    from kdinv.evaluation import teacher_gate

    log.info("seed %d, T %g, recipe %s", seed, temperature, recipe)
    dev = pick_device(device)
    generator = seed_everything(seed)
    x, y, num_classes, train_idx, val_idx = _fold_data(train_split, fold_file)
    cached = load_tensors(teacher_logits)["logits"]
    if cached.shape != (len(y), num_classes):
        raise ValueError(
            f"{teacher_logits}: teacher logits of shape {tuple(cached.shape)} do not fit the training "
            f"split ({len(y)} samples, {num_classes} classes)"
        )
    name = " ".join(f"{k}={v}" for k, v in wildcards.items())
    log.info("%s: distilling on %s", name, describe_device(dev))
    # the student first: its initialisation draws from the global generator, and nothing the
    # teacher gate or the recipe does below may change it
    scaling = load_fold_scaling(fold_file)
    model = build_from_spec(student_spec, x.shape[1:], num_classes, scaling)
    teacher = None
    if gates:
        teacher = _load_teacher(teacher_model, dev)
        x_test, _, _ = load_split(test_split)
        teacher_gate(teacher, x_test, gates, gate_seed, 512, dev, f"{name}: teacher {teacher_model}")
    augment = make_augmentation(recipe["transform"]) if recipe.get("transform") else None
    sample = train_idx[:512]
    batch_teacher = _per_batch_teacher(recipe, gates, teacher, teacher_model, cached[sample], x[sample], seed, dev,
                                       name)
    cfg = TrainConfig.from_dict(student_spec["distillation"])
    loss = recipe_loss(recipe, temperature, augment, batch_teacher)
    state, history = fit(
        model, x[train_idx], cached[train_idx], x[val_idx], y[val_idx], loss, cfg, generator, dev, name=name,
        resume=Resume(_resume_file(out_model), resume_every, resume_minutes,
                      _fingerprint(student_spec, temperature, recipe, seed, wildcards, precision)),
        precision=precision, seed=seed,
    )
    save_tensors(
        with_scaling(
            checkpoint(state, student_spec["arch"], student_spec["params"], tuple(x.shape[1:]), num_classes,
                       cfg, history, wildcards, seed, group_average=student_spec.get("group_average")),
            scaling,
        ),
        out_model,
    )
    _resume_file(out_model).unlink(missing_ok=True)


def _per_batch_teacher(recipe: dict, gates: dict | None, teacher, teacher_model, cached_sample: torch.Tensor,
                       sample: torch.Tensor, seed: int, dev: torch.device, name: str):
    """The teacher a distillation runs on every batch, or None where the cached logits serve
    (:attr:`kdinv.distill.recipes.Recipe.teacher_every_batch`). ``unless_invariant``: the cache
    serves a teacher that passed the gate for the recipe's symmetry and whose cache matches its
    outputs on transformed training inputs (``sample``, the first 512 of the fold's training part,
    and ``cached_sample``, the cache on them). ``teacher``: the teacher the gate loaded, if
    it did (loaded here otherwise)."""
    from kdinv.distill.recipes import RECIPES
    from kdinv.evaluation import TEACHER_IM_MAX, logits_in, transformed_copies

    uses = RECIPES[recipe["recipe"]].teacher_every_batch
    per_batch = uses == "always" or (uses == "unless_invariant" and recipe["symmetry"] not in (gates or {}))
    if uses == "unless_invariant" and not per_batch:
        # the gate passed on test inputs; check the cache against the teacher on transformed
        # training inputs too, the inputs the student will see
        moved = transformed_copies(sample, recipe["transform"], seed)
        gap = metrics.invariance(cached_sample, logits_in(teacher, moved, 512, dev))
        per_batch = not gap <= TEACHER_IM_MAX
        log.info("%s: cached teacher outputs vs the teacher on transformed training inputs: IM %.3g (%s)",
                 name, gap, "cache used" if not per_batch else "the teacher runs on every batch")
    if not per_batch:
        return None
    teacher = teacher or _load_teacher(teacher_model, dev)
    log.info("%s: recipe %s runs the teacher on every batch", name, recipe["recipe"])
    return teacher
