"""What each architecture reads and which symmetries it is invariant to by construction, without
importing torch (the config's validation checks rows against it before any job runs).

Invariance here is structural: it holds for every weight, so a teacher that should have it and
does not is a bug (docs/method.md, "The teacher gate"), not a result.
"""

from __future__ import annotations

ARCH_INPUTS: dict[str, frozenset[str]] = {
    "resnet18_aps": frozenset({"image"}),
    "mlp": frozenset({"image", "point_cloud", "set"}),
    "dgcnn": frozenset({"point_cloud"}),
    "deepsets": frozenset({"set", "point_cloud"}),
}
"""The input kinds (:data:`kdinv.symmetry.catalog.INPUT_KINDS`) each architecture can read."""

RESNET_STRIDE = 32
"""ResNet18-APS downsamples five times by 2: it is exactly invariant to circular shifts when the
image side is a multiple of 32 (every downsampled map has even size), only approximately else."""


def structural_invariances(arch: str, image_side: int | None = None) -> frozenset[str]:
    """The transforms (by name) ``arch`` is invariant to whatever its weights.

    - resnet18_aps: circular shifts (``shift_2d``, lossless, equals a circular roll) when the image
      side is a multiple of :data:`RESNET_STRIDE`;
    - dgcnn: translations (edge function h(x_j − x_i), kNN on distances) and point permutations;
    - deepsets: permutations of the set's elements;
    - mlp: none.
    """
    if arch == "resnet18_aps":
        exact = image_side is not None and image_side % RESNET_STRIDE == 0
        return frozenset({"shift_2d"}) if exact else frozenset()
    if arch == "dgcnn":
        return frozenset({"translate_3d", "permute_set"})
    if arch == "deepsets":
        return frozenset({"permute_set"})
    if arch == "mlp":
        return frozenset()
    raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCH_INPUTS)}")


def model_invariances(model: dict, image_side: int | None = None) -> frozenset[str]:
    """The transforms a config model entry is invariant to: its architecture's, plus the finite
    group it is averaged over (``group_average``). Averaging over G keeps the backbone's
    invariances when G maps them onto themselves, as rotations and flips do with circular shifts
    and translations, and every such G does with permutations of the points."""
    out = structural_invariances(model["arch"], image_side)
    if model.get("group_average"):
        out |= {model["group_average"]}
    return frozenset(out)
