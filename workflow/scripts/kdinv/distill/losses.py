"""Distillation losses: the KD loss (paper Eq. 2; Hinton et al. 2015), the consistency penalty,
and what the recipes' losses share (:mod:`kdinv.distill.recipes` holds each recipe's loss)."""

from __future__ import annotations

import torch

KD_DIRECTIONS = ("forward", "reverse")


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    direction: str = "forward",
) -> torch.Tensor:
    """τ²-scaled KL divergence between temperature-softened teacher and student distributions.

    forward (default, paper Eq. 2): L = τ² · (1/B) Σ_i Σ_c p_t,c^τ (log p_t,c^τ − log p_s,c^τ),
    i.e. τ² · KL(P_t^τ ‖ P_s^τ); its gradient w.r.t. the student logits is τ (p_s^τ − p_t^τ) / B.
    reverse: τ² · KL(P_s^τ ‖ P_t^τ), what the authors' code computes (docs/decisions.md).

    The sum runs over classes and the mean over the batch ("batchmean"). The τ² factor keeps the
    gradient magnitude comparable across temperatures (Hinton et al. 2015). The teacher logits are
    treated as constants: pass them detached.

    Args:
        student_logits: [B, C] student outputs (with gradient).
        teacher_logits: [B, C] teacher outputs on the same inputs.
        temperature: τ > 0.
        direction: "forward" or "reverse".
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if direction not in KD_DIRECTIONS:
        raise ValueError(f"kd direction must be one of {KD_DIRECTIONS}, got {direction!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    log_ps = (student_logits.float() / temperature).log_softmax(dim=1)
    log_pt = (teacher_logits.float() / temperature).log_softmax(dim=1)
    if direction == "forward":
        per_sample = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)
    else:
        per_sample = (log_ps.exp() * (log_ps - log_pt)).sum(dim=1)
    return temperature**2 * per_sample.mean()


def consistency_penalty(logits: torch.Tensor, transformed_logits: torch.Tensor) -> torch.Tensor:
    """mean_i ‖softmax(z(x_i)) − softmax(z(g_i·x_i))‖₂²: the invariance metric's per-sample term
    (paper Eq. 3, at T = 1), squared so that it is differentiable everywhere (docs/beyond.md,
    recipe ``consistency``). Both arguments carry the student's gradient.

    Args:
        logits, transformed_logits: [B, C] the student on x and on its transformed copies.
    """
    if logits.shape != transformed_logits.shape:
        raise ValueError(f"logit shapes differ: {tuple(logits.shape)} vs {tuple(transformed_logits.shape)}")
    diff = logits.float().softmax(dim=1) - transformed_logits.float().softmax(dim=1)
    return diff.pow(2).sum(dim=1).mean()


def same_randomness(first, second, device: torch.device):
    """``(first(), second())``, the second drawn from the random state the first started from.

    The consistency penalty compares the student on x and on g·x in training mode: with
    independent dropout masks the two passes differ even for g = identity, and the penalty would
    measure the dropout noise, not the invariance. Restoring the random state (CPU, and the GPU of
    ``device``) before the second pass gives both the same masks, so the penalty is exactly 0
    where g·x = x. Each pass keeps its own batch: BatchNorm normalises x and g·x each with its
    own batch statistics, as a forward pass of either alone would (a single pass on
    cat([x, g·x]) would mix them and still draw a different mask per row). The random state then
    continues from where a single pass would leave it."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        out_first = first()
    return out_first, second()


@torch.no_grad()
def teacher_outputs(teacher: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The teacher's float32 logits on ``x`` in eval mode, without gradient (as the cache holds)."""
    teacher.eval()
    return teacher(x).float()


def recipe_loss(recipe: dict, temperature: float, augment=None, teacher: torch.nn.Module | None = None):
    """The batch loss (``kdinv.training.BatchLoss``) of a recipe variant's job params
    (:meth:`kdinv.distill.recipes.Variant.spec`): that of its recipe, built by the loss the
    recipe names (:attr:`kdinv.distill.recipes.Recipe.loss`; the workflow's own are below).

    ``augment`` draws g from the step's generator, for recipes that apply a symmetry; ``teacher``
    is the teacher to run on the batch, or None where the cached logits stand for it.
    """
    from kdinv.distill.recipes import RECIPES

    if recipe["recipe"] not in RECIPES:
        raise ValueError(f"unknown recipe {recipe['recipe']!r} (recipes: {sorted(RECIPES)})")
    kind = RECIPES[recipe["recipe"]]
    if kind.needs_symmetry and augment is None:
        raise ValueError(f"recipe {kind.name} needs the symmetry's augmentation")
    if kind.teacher_every_batch == "always" and teacher is None:
        raise ValueError(f"recipe {kind.name} runs the teacher on every batch: pass the teacher")
    direction = recipe["direction"]

    def kd(student_logits, teacher_logits):
        return kd_loss(student_logits, teacher_logits, temperature, direction)

    return kind.loss_builder()(kind.values_of(recipe), kd, augment, teacher)


# The recipes' losses (kdinv.distill.recipes.RECIPES names them): each builds the batch loss of a
# variant from its parameter values, the KD term ``kd``, the symmetry's ``augment`` and the
# teacher to run on the batch (None: the cached logits stand for it).


def plain_loss(values, kd, augment, teacher):
    """The KD loss of the student on the batch against the cached teacher logits."""
    return lambda model, batch: kd(batch.forward(model, batch.inputs), batch.targets)


def augmented_loss(values, kd, augment, teacher):
    """The student on g·x (``augment`` draws g from the step's generator) against the teacher on
    the same g·x: the cache where the teacher is invariant (``teacher`` None), else the teacher
    run on the batch."""
    def augmented(model, batch):
        moved = augment(batch.inputs, batch.generator)
        targets = batch.targets if teacher is None else teacher_outputs(teacher, moved)
        return kd(batch.forward(model, moved), targets)

    return augmented


def consistency_loss(values, kd, augment, teacher):
    """plain + λ · the consistency penalty of the student on x and g·x (two student passes with
    the same dropout masks, :func:`same_randomness`)."""
    weight = float(values["lambda"])

    def consistency(model, batch):
        x_moved = augment(batch.inputs, batch.generator)
        logits, moved = same_randomness(lambda: batch.forward(model, batch.inputs),
                                        lambda: batch.forward(model, x_moved), batch.inputs.device)
        return kd(logits, batch.targets) + weight * consistency_penalty(logits, moved)

    return consistency


def mixup_loss(values, kd, augment, teacher):
    """x̃ = a·x_i + (1−a)·x_j with a ~ Beta(α, α) per sample and j a permutation of the batch, the
    student against the teacher on x̃ (run on the batch)."""
    import numpy as np

    mixup_alpha = float(values["alpha"])

    def mixup(model, batch):
        n = len(batch.inputs)
        a = np.random.default_rng(batch.seed).beta(mixup_alpha, mixup_alpha, size=n)
        a = torch.as_tensor(a, dtype=batch.inputs.dtype, device=batch.inputs.device)
        a = a.view(n, *([1] * (batch.inputs.ndim - 1)))
        partner = torch.randperm(n, generator=batch.generator).to(batch.inputs.device)
        mixed = a * batch.inputs + (1 - a) * batch.inputs[partner]
        return kd(batch.forward(model, mixed), teacher_outputs(teacher, mixed))

    return mixup
