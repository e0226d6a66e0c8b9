"""Models: the architectures (one module each), the registry that builds them from the config,
the wrappers that become part of a model, and the checkpoint format.

- :mod:`~kdinv.models.resnet` ResNet18-APS, :mod:`~kdinv.models.mlp` MLP, :mod:`~kdinv.models.dgcnn`
  DGCNN, :mod:`~kdinv.models.deepsets` DeepSets;
- :mod:`~kdinv.models.registry`: :data:`ARCHITECTURES` and :func:`build_model`;
- :mod:`~kdinv.models.capabilities`: what each architecture reads and is invariant to (no torch);
- :mod:`~kdinv.models.wrappers`: :class:`Standardized` (the fold's input scaling),
  :class:`GroupAveraged` (the average over a finite group's orbit) and :class:`FrameAveraged`
  (the average over a point cloud's PCA frame, for continuous rotation groups);
- :mod:`~kdinv.models.checkpoint`: what ``model.pt`` holds and :func:`load_model`.

The names below are imported on first use, so that ``kdinv.models.capabilities`` can be read
without importing torch.
"""

from importlib import import_module

_WHERE = {
    "APSDown": "resnet", "ResNet18APS": "resnet", "MLP": "mlp", "DGCNN": "dgcnn", "EdgeConv": "dgcnn",
    "knn_indices": "dgcnn", "DeepSets": "deepsets", "PermEquivariant": "deepsets",
    "ARCHITECTURES": "registry", "build_model": "registry",
}  # fmt: skip

__all__ = sorted(_WHERE)  # noqa: PLE0605 - made from _WHERE, so the two cannot disagree


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"kdinv.models.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'kdinv.models' has no attribute {name!r}")
