"""Each metric against an independent implementation (torchmetrics, numpy, scipy), plus edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax as np_log_softmax
from scipy.special import rel_entr, softmax
from torchmetrics.classification import MulticlassCalibrationError

from kdinv import metrics


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 10, generator=g) * 3
    labels = torch.randint(0, 10, (2000,), generator=g)
    # make it better than chance so accuracy and calibration are not trivial
    labels[:1200] = logits[:1200].argmax(1)
    return logits, labels


def test_accuracy_against_numpy(data):
    logits, labels = data
    expected = np.mean(logits.numpy().argmax(1) == labels.numpy())
    assert metrics.accuracy(logits, labels) == pytest.approx(expected, abs=1e-12)


def test_nll_against_numpy(data):
    logits, labels = data
    logp = np_log_softmax(logits.numpy().astype(np.float64), axis=1)
    expected = -logp[np.arange(len(labels)), labels.numpy()].mean()
    assert metrics.nll(logits, labels) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n_bins", [15, 10, 5])
@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
def test_ece_against_torchmetrics(data, n_bins, scale):
    logits, labels = data
    logits = logits * scale
    reference = MulticlassCalibrationError(num_classes=10, n_bins=n_bins, norm="l1")
    expected = reference(logits, labels).item()  # torchmetrics works in float32
    assert metrics.ece(logits, labels, n_bins=n_bins) == pytest.approx(expected, abs=1e-6)


def test_ece_against_numpy_formula(data):
    logits, labels = data
    p = softmax(logits.numpy().astype(np.float64), axis=1)
    conf, pred = p.max(1), p.argmax(1)
    correct = pred == labels.numpy()
    total = 0.0
    for b in range(16):  # 15 bins [b/15, (b+1)/15) plus conf == 1.0 on its own
        lo, hi = b / 15, (b + 1) / 15
        sel = (conf >= lo) & (conf < hi) if b < 15 else conf == 1.0
        if sel.any():
            total += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    assert metrics.ece(logits, labels) == pytest.approx(total, abs=1e-12)


def test_ece_is_zero_when_perfectly_calibrated():
    # confidence 0.75 on class 0 for 4 samples, 3 of which are class 0: accuracy 0.75 = confidence
    p = torch.tensor([[0.75, 0.25]] * 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1])
    assert metrics.ece(p.log(), labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_is_one_when_confidently_wrong():
    logits = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    assert metrics.ece(logits, torch.tensor([1, 0])) == pytest.approx(1.0, abs=1e-9)


def test_kl_against_scipy(data):
    logits, _ = data
    g = torch.Generator().manual_seed(1)
    student = logits + torch.randn(logits.shape, generator=g)
    pt = softmax(logits.numpy().astype(np.float64), axis=1)
    ps = softmax(student.numpy().astype(np.float64), axis=1)
    expected = rel_entr(pt, ps).sum(1).mean()
    assert metrics.kl_divergence(logits, student) == pytest.approx(expected, rel=1e-9)
    # the direction matters: KL(P_t || P_s) is not KL(P_s || P_t)
    assert metrics.kl_divergence(student, logits) != pytest.approx(expected, rel=1e-3)


def test_agreement_against_numpy(data):
    logits, _ = data
    other = logits.clone()
    other[::3] = other[::3].roll(1, dims=1)
    expected = np.mean(logits.numpy().argmax(1) == other.numpy().argmax(1))
    assert metrics.agreement(other, logits) == pytest.approx(expected, abs=1e-12)
    assert expected < 1


def test_identical_models_agree_fully_with_zero_kl(data):
    logits, _ = data
    assert metrics.agreement(logits, logits.clone()) == 1.0
    assert metrics.kl_divergence(logits, logits.clone()) == pytest.approx(0.0, abs=1e-12)
    assert metrics.invariance(logits, logits.clone()) == pytest.approx(0.0, abs=1e-12)


def test_invariance_against_numpy(data):
    logits, _ = data
    g = torch.Generator().manual_seed(2)
    moved = logits + torch.randn(logits.shape, generator=g)
    diff = softmax(logits.numpy().astype(np.float64), 1) - softmax(moved.numpy().astype(np.float64), 1)
    expected = np.sqrt((diff**2).sum(1)).mean()
    assert metrics.invariance(logits, moved) == pytest.approx(expected, rel=1e-10)
    # two opposite one-hot predictions are sqrt(2) apart, the maximum
    a = torch.tensor([[50.0, 0.0]])
    assert metrics.invariance(a, a.flip(1)) == pytest.approx(2**0.5, rel=1e-9)


def test_metric_over_whole_split_is_not_a_mean_of_batch_means():
    # 3 samples: a batch of 2 all right and a batch of 1 wrong -> 2/3 over the split, not 0.5
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert metrics.accuracy(logits, torch.tensor([0, 0, 1])) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "fn", [metrics.accuracy, metrics.nll, metrics.ece]
)
def test_shape_mismatch_raises(fn):
    with pytest.raises(ValueError, match="labels must have shape"):
        fn(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("fn", [metrics.agreement, metrics.kl_divergence, metrics.invariance])
def test_pair_shape_mismatch_raises(fn):
    with pytest.raises(ValueError, match="logit shapes differ"):
        fn(torch.zeros(4, 3), torch.zeros(4, 2))
