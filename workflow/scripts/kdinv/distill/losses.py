"""Distillation loss (paper Eq. 2; Hinton et al. 2015)."""

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
    reverse: τ² · KL(P_s^τ ‖ P_t^τ), what the authors' code computes (reference-code-facts §1.2).

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
