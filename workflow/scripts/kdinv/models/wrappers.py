"""Wrappers that become part of a model: fixed input scaling (and, later, group averaging)."""

from __future__ import annotations

import torch
from torch import nn


class Standardized(nn.Module):
    """``model((x − center) / scale)`` with fixed per-feature statistics (last input dim)."""

    def __init__(self, model: nn.Module, center: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32).clone())
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.center) / self.scale)
