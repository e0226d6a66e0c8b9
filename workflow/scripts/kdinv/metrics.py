"""The paper's six metrics (§3.4), computed over a whole split from concatenated logits.

Every function takes logits of shape [N, C] (and labels [N] where needed) and returns a Python
float. Fractions lie in [0, 1]; NLL and KL are in nats. Nothing here is a mean of per-batch
values: the authors' code averaged per-batch metrics, which weighs the last, smaller batch as much
as a full one (docs/decisions.md); this project computes each metric on the whole split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_logits(logits: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [N, C], got {tuple(logits.shape)}")
    if labels is not None and labels.shape != logits.shape[:1]:
        raise ValueError(
            f"labels must have shape [{logits.shape[0]}] to match logits {tuple(logits.shape)}, "
            f"got {tuple(labels.shape)}"
        )


def _check_pair(first: torch.Tensor, second: torch.Tensor) -> None:
    _check_logits(first)
    if first.shape != second.shape:
        raise ValueError(f"logit shapes differ: {tuple(first.shape)} vs {tuple(second.shape)}")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy: the fraction of samples whose argmax logit is the label."""
    _check_logits(logits, labels)
    return (logits.argmax(dim=1) == labels).double().mean().item()


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Negative log-likelihood: mean over samples of −log softmax(z)_y at T = 1, in nats."""
    _check_logits(logits, labels)
    return F.cross_entropy(logits.double(), labels, reduction="mean").item()


def ece(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error, L1, on the top-label confidence.

    ECE = Σ_b (n_b / N) · |acc_b − conf_b|, over ``n_bins`` equal-width bins of [0, 1]. Bin
    convention (torchmetrics' ``MulticlassCalibrationError`` default, which the authors used): bin b
    holds confidences in [b/n_bins, (b+1)/n_bins), and a confidence of exactly 1.0 gets a bin of
    its own. Empty bins contribute nothing.
    """
    _check_logits(logits, labels)
    probs = logits.double().softmax(dim=1)
    confidence, prediction = probs.max(dim=1)
    correct = (prediction == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence, edges, right=True) - 1  # [N], values 0..n_bins
    count = torch.zeros(n_bins + 1, dtype=torch.float64).index_add_(0, index, torch.ones_like(correct))
    conf_sum = torch.zeros_like(count).index_add_(0, index, confidence)
    acc_sum = torch.zeros_like(count).index_add_(0, index, correct)
    return ((acc_sum - conf_sum).abs().sum() / count.sum()).item()


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Top-1 agreement: the fraction of samples on which student and teacher argmax agree."""
    _check_pair(student_logits, teacher_logits)
    return (student_logits.argmax(dim=1) == teacher_logits.argmax(dim=1)).double().mean().item()


def kl_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> float:
    """Teacher-student KL at T = 1: mean over samples of KL(P_t ‖ P_s) = Σ_c p_t,c (log p_t,c − log p_s,c).

    The direction is teacher ‖ student, the paper's; the authors' code computed KL(P_s ‖ P_t)
    (docs/decisions.md).
    """
    _check_pair(teacher_logits, student_logits)
    log_pt = teacher_logits.double().log_softmax(dim=1)
    log_ps = student_logits.double().log_softmax(dim=1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(dim=1).mean().item()


def invariance(logits: torch.Tensor, transformed_logits: torch.Tensor) -> float:
    """Invariance metric IM (paper Eq. 3): mean over samples of ‖softmax(z(x)) − softmax(z(x′))‖₂.

    One transformed copy x′ per sample; 0 for an exactly invariant model. The norm is L2 over
    classes, as in the authors' code; the mean is over samples (not a per-batch sum).
    """
    _check_pair(logits, transformed_logits)
    diff = logits.double().softmax(dim=1) - transformed_logits.double().softmax(dim=1)
    return diff.norm(dim=1).mean().item()
