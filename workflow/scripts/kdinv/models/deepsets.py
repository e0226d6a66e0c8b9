"""DeepSets (Zaheer et al. 2017): invariant (per-element φ) and equivariant (Γx − Λ·mean(x)) layers,
pooling, then ρ. The ModelNet40 students and the jet teachers."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class PermEquivariant(nn.Module):
    """Permutation-equivariant set layer X ↦ Γ(X) − Λ(mean over the set of X) (Zaheer et al. 2017):
    Γ a Linear with bias applied per element, Λ a Linear without bias; (B, S, F) -> (B, S, F')."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.gamma = nn.Linear(in_features, out_features)
        self.lam = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.gamma(x) - self.lam(x.mean(dim=1, keepdim=True))


class DeepSets(nn.Module):
    """DeepSets (Zaheer et al. 2017): ρ(pool_s φ(x_s)), invariant to permutations of the set.

    * φ: for each width of ``phi``, a ``Linear`` applied per element (or, when ``equivariant``, a
      :class:`PermEquivariant` layer), followed by the activation.
    * pool: mean or max over the set (dim 1), padding slots included.
    * ρ: for each width of ``rho``, ``[Dropout] → Linear → activation``, then ``[Dropout] → Linear``
      to the logits; the Dropout layers exist only when ``dropout`` is not None (the authors'
      ModelNet DeepSets).

    The authors' ModelNet students: ``phi=[256]*3, rho=[256], activation="tanh", pool="max",
    dropout=0.5`` (208,680 parameters, 340,520 equivariant); their jets teacher: ``phi=[32]*3,
    rho=[32]``, ReLU, mean, no dropout (3,461).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        phi: Sequence[int],
        rho: Sequence[int],
        *,
        activation: str = "relu",
        pool: str = "mean",
        dropout: float | None = None,
        equivariant: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
        if pool not in ("mean", "max"):
            raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
        act = nn.ReLU if activation == "relu" else nn.Tanh
        self.pool = pool
        layers: list[nn.Module] = []
        prev = in_features
        for w in phi:
            layers += [PermEquivariant(prev, w) if equivariant else nn.Linear(prev, w), act()]
            prev = w
        self.phi = nn.Sequential(*layers)
        layers = []
        for w in [*rho, num_classes]:
            if dropout is not None:
                layers.append(nn.Dropout(dropout))
            layers += [nn.Linear(prev, w), act()]
            prev = w
        self.rho = nn.Sequential(*layers[:-1])  # no activation after the last Linear

    def forward(self, x: Tensor) -> Tensor:
        """Map sets (B, S, F) to logits (B, num_classes)."""
        if x.ndim != 3:
            raise ValueError(f"DeepSets expects sets (B, S, F), got {tuple(x.shape)}")
        h = self.phi(x)  # (B, S, phi[-1])
        h = h.mean(dim=1) if self.pool == "mean" else h.max(dim=1).values
        return self.rho(h)
