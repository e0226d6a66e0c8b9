"""Helpers of the tests of invariant models (tests/unit/symmetry): random-weight models made
realistic (BatchNorm statistics of the data, logits of a given spread), and IM under one seeded
draw of a transform."""

from __future__ import annotations

import torch
from torch import nn

from kdinv.metrics import invariance
from kdinv.symmetry.transforms import make_transform


def set_batchnorm_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Eval mode with the BatchNorm running statistics of x (one train-mode pass, cumulative
    average), as after training to convergence."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def calibrate(model: nn.Module, x: torch.Tensor, logit_std: float = 3.0) -> nn.Module:
    """Eval mode with BatchNorm statistics of x and the last Linear scaled so the logits on x vary
    with standard deviation ``logit_std`` across samples and are centred per class: the softmax is
    far from uniform and depends on the input."""
    set_batchnorm_statistics(model, x)
    with torch.no_grad():
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        z = model(x)
        last.weight.mul_(logit_std / (z - z.mean(dim=0)).std().item())
        last.bias.sub_(model(x).mean(dim=0))
    return model


def im(model: nn.Module, x: torch.Tensor, transform: str, seed: int = 123, train: bool = False) -> float:
    """IM of ``model`` under one seeded draw of the transform (its registry defaults)."""
    xt = make_transform({"transform": transform})(x, torch.Generator().manual_seed(seed))
    model.train(train)
    with torch.no_grad():
        return invariance(model(x), model(xt))
