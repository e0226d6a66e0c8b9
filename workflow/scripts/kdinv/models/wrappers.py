"""Wrappers that become part of a model: fixed input scaling and group averaging."""

from __future__ import annotations

import torch
from torch import nn

from kdinv.symmetry.transforms import GROUP_ACTIONS, group_order


class Standardized(nn.Module):
    """``model((x − center) / scale)`` with fixed per-feature statistics (last input dim)."""

    def __init__(self, model: nn.Module, center: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32).clone())
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.center) / self.scale)


class GroupAveraged(nn.Module):
    """``f_G(x) = (1/|G|) Σ_g f(g·x)`` on the logits: ``model`` averaged over the orbit of a finite
    group (a transform of :data:`kdinv.symmetry.transforms.GROUP_ACTIONS`), exactly G-invariant
    whatever the weights, because the orbit of h·x is the orbit of x in another order.

    The backbone sees the whole orbit in one pass: the |G| transformed copies of the batch are
    concatenated into B·|G| inputs (element-major: rows k·B .. k·B + B − 1 hold element k). In
    training mode BatchNorm therefore normalises with the statistics of the whole orbit, which are
    the same for x and h·x, so the average is invariant in training mode too (B separate passes
    would give each element its own statistics and break that; dropout, random by design, is the
    one training-mode exception). Cost: compute and activation memory of one forward pass on
    B·|G| inputs, i.e. |G| times a forward on B (evaluation batch sizes may need dividing by |G|).

    Invariances of the backbone that G maps onto themselves are kept: circular shifts under
    rot90_2d and flip_2d, translations and point permutations under rot90_z_3d.
    """

    def __init__(self, model: nn.Module, transform: str) -> None:
        super().__init__()
        self.model = model
        self.transform = transform
        self.order = group_order(transform)
        self._action = GROUP_ACTIONS[transform]

    def extra_repr(self) -> str:
        return f"transform={self.transform!r}, order={self.order}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orbit = torch.cat([self._action(x, k) for k in range(self.order)])  # [|G|·B, ...]
        z = self.model(orbit)
        return z.reshape(self.order, x.shape[0], *z.shape[1:]).mean(dim=0)
