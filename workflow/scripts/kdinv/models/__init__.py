"""Models: the architectures (one module each), the registry that builds them from the config,
the wrappers that become part of a model, and the checkpoint format.

- :mod:`~kdinv.models.resnet` ResNet18-APS, :mod:`~kdinv.models.mlp` MLP, :mod:`~kdinv.models.dgcnn`
  DGCNN, :mod:`~kdinv.models.deepsets` DeepSets;
- :mod:`~kdinv.models.registry`: :data:`ARCHITECTURES` and :func:`build_model`;
- :mod:`~kdinv.models.wrappers`: :class:`Standardized` (the fold's input scaling);
- :mod:`~kdinv.models.checkpoint`: what ``model.pt`` holds and :func:`load_model`.
"""

from kdinv.models.deepsets import DeepSets, PermEquivariant
from kdinv.models.dgcnn import DGCNN, EdgeConv, knn_indices
from kdinv.models.mlp import MLP
from kdinv.models.registry import ARCHITECTURES, build_model
from kdinv.models.resnet import APSDown, ResNet18APS

__all__ = [
    "APSDown",
    "ARCHITECTURES",
    "DGCNN",
    "DeepSets",
    "EdgeConv",
    "MLP",
    "PermEquivariant",
    "ResNet18APS",
    "build_model",
    "knn_indices",
]
