"""The fully connected student (it flattens its input)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """Fully connected ReLU network, the student of the MNIST row.

    Flattens every input dimension after the batch, applies ``Linear + ReLU`` for each width in
    ``hidden`` and a final ``Linear`` to ``num_classes`` logits; PyTorch default initialisation.
    The paper's MNIST student is ``MLP(784 or 1024, [2048] * 5, 10)`` (the reference code's
    ``hidden_layers=4`` adds 4 layers after the first hidden one).
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.in_features = in_features
        layers: list[nn.Module] = []
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map inputs (B, ...) with ``in_features`` trailing elements to logits (B, num_classes)."""
        x = x.flatten(1)  # (B, ...) -> (B, in_features)
        if x.shape[1] != self.in_features:
            raise ValueError(f"MLP expects {self.in_features} input features, got {x.shape[1]}")
        return self.net(x)
