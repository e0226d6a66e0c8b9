"""Wrappers that become part of a model: fixed input scaling, group averaging and frame averaging."""

from __future__ import annotations

import torch
from torch import nn

from kdinv.symmetry.catalog import TRANSFORM_INFO
from kdinv.symmetry.frames import canonical_copies
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


class FrameAveraged(nn.Module):
    """``f_F(x) = (1/|F|) Σ_{V ∈ F(x)} f(V⁻¹·(x − x̄))`` on the logits: ``model`` averaged over the
    PCA frame of each centred cloud (:mod:`kdinv.symmetry.frames`), exactly invariant to the
    continuous rotation group ``transform`` (``so3_3d``: 4 frame elements; ``so2_z_3d``: 2) and to
    translations whatever the weights, because the canonical copies of R·x + t are those of x.
    Point permutations, to which the mean and the covariance are blind, stay an invariance of a
    permutation-invariant backbone.

    Like :class:`GroupAveraged`, the backbone sees the |F| copies of the batch in one pass of
    |F|·B inputs (element-major), so BatchNorm's training statistics are those of the same set of
    copies for x and R·x and the average is invariant in training mode too (dropout aside). The
    frame is computed in float64 and the copies handed to the backbone in x's dtype; gradients
    flow to the weights only (the frame depends on the input, not on the weights). Cost: one
    forward pass on |F|·B inputs plus a 3×3 (or 2×2) eigendecomposition per cloud.
    """

    def __init__(self, model: nn.Module, transform: str) -> None:
        super().__init__()
        info = TRANSFORM_INFO.get(transform)
        if info is None or info.frame_size is None:
            raise ValueError(f"{transform!r} is not a continuous group with a frame")
        self.model = model
        self.transform = transform
        self.order = info.frame_size

    def extra_repr(self) -> str:
        return f"transform={self.transform!r}, frame={self.order}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        copies = canonical_copies(x, self.transform)  # [|F|·B, P, 3]
        z = self.model(copies)
        return z.reshape(self.order, x.shape[0], *z.shape[1:]).mean(dim=0)


def averaged(model: nn.Module, transform: str) -> nn.Module:
    """``model`` made invariant to ``transform``: :class:`GroupAveraged` over a finite group,
    :class:`FrameAveraged` over a continuous rotation group."""
    info = TRANSFORM_INFO.get(transform)
    if info is not None and info.frame_size is not None:
        return FrameAveraged(model, transform)
    return GroupAveraged(model, transform)
