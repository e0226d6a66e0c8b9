"""The KD loss: its formula in both directions, the tau^2 scaling and its gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import rel_entr, softmax

from kdinv.distill.losses import kd_loss


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 10, generator=g) * 4, torch.randn(64, 10, generator=g) * 4


@pytest.mark.parametrize("tau", [1.0, 4.0, 8.0, 16.0, 0.5])
def test_forward_is_tau2_kl_teacher_student(logits, tau):
    s, t = logits
    pt = softmax(t.numpy().astype(np.float64) / tau, axis=1)
    ps = softmax(s.numpy().astype(np.float64) / tau, axis=1)
    expected = tau**2 * rel_entr(pt, ps).sum(1).mean()
    assert kd_loss(s, t, tau).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_reverse_is_what_the_authors_code_computes(logits, tau):
    s, t = logits
    # the authors' call: tau^2 * KLDivLoss(batchmean, log_target=True)(input=log p_t, target=log p_s)
    authors = tau**2 * torch.nn.KLDivLoss(reduction="batchmean", log_target=True)(
        F.log_softmax(t / tau, dim=1), F.log_softmax(s / tau, dim=1)
    )
    assert kd_loss(s, t, tau, direction="reverse").item() == pytest.approx(authors.item(), rel=1e-5)
    assert abs(kd_loss(s, t, tau).item() - authors.item()) > 1e-3  # the directions differ


def test_forward_equals_torch_kl_div_with_student_as_input(logits):
    s, t = logits
    ref = 16 * F.kl_div(F.log_softmax(s / 4, 1), F.log_softmax(t / 4, 1), reduction="batchmean", log_target=True)
    assert kd_loss(s, t, 4.0).item() == pytest.approx(ref.item(), rel=1e-5)


def test_tau_squared_scaling(logits):
    s, t = logits
    for tau in (2.0, 8.0):
        unscaled = F.kl_div(
            F.log_softmax(s / tau, 1), F.log_softmax(t / tau, 1), reduction="batchmean", log_target=True
        )
        assert kd_loss(s, t, tau).item() == pytest.approx(tau**2 * unscaled.item(), rel=1e-5)


@pytest.mark.parametrize("tau", [1.0, 4.0, 16.0])
def test_forward_gradient_is_tau_times_ps_minus_pt_over_batch(logits, tau):
    s, t = logits
    s = s.clone().requires_grad_(True)
    kd_loss(s, t, tau).backward()
    expected = tau * (F.softmax(s.detach() / tau, 1) - F.softmax(t / tau, 1)) / len(s)
    torch.testing.assert_close(s.grad, expected, rtol=1e-4, atol=1e-7)


def test_reverse_gradient_matches_autograd_of_the_formula(logits):
    s, t = logits
    s1 = s.clone().double().requires_grad_(True)
    kd_loss(s1, t.double(), 4.0, direction="reverse").backward()
    s2 = s.clone().double().requires_grad_(True)
    log_ps, log_pt = (s2 / 4).log_softmax(1), (t.double() / 4).log_softmax(1)
    (16 * (log_ps.exp() * (log_ps - log_pt)).sum(1).mean()).backward()
    torch.testing.assert_close(s1.grad.double(), s2.grad, rtol=1e-4, atol=1e-8)


def test_zero_when_student_equals_teacher(logits):
    _, t = logits
    assert kd_loss(t.clone(), t, 4.0).item() == pytest.approx(0.0, abs=1e-5)
    assert kd_loss(t.clone(), t, 4.0, direction="reverse").item() == pytest.approx(0.0, abs=1e-5)


def test_bad_arguments_raise(logits):
    s, t = logits
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, t, 0.0)
    with pytest.raises(ValueError, match="direction"):
        kd_loss(s, t, 1.0, direction="sideways")
    with pytest.raises(ValueError, match="differ in shape"):
        kd_loss(s, t[:, :5], 1.0)
