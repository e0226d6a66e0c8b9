"""What each symmetry transformation acts on and whether it enumerates a finite group, without
importing torch (the config's validation reads it while Snakemake builds the DAG).

The transformations themselves are in :mod:`kdinv.symmetry.transforms` (a test checks that both
name the same transforms). Input kinds: ``image`` [C, H, W], ``point_cloud`` [P, 3], ``set``
[S, F] (a point cloud is also a set of points).
"""

from __future__ import annotations

from dataclasses import dataclass

INPUT_KINDS = ("image", "point_cloud", "set")

#: The IM at or below which a model counts as invariant: the teacher gate's threshold
#: (:func:`kdinv.evaluation.teacher_gate`) and claim (a)'s (:mod:`kdinv.analysis.claims`).
TEACHER_IM_MAX = 1e-4


@dataclass(frozen=True)
class TransformInfo:
    """``acts_on``: the input kinds it applies to; ``group_order``: |G| when the transform's group
    is finite and :func:`kdinv.symmetry.transforms.group_elements` enumerates it (so a model can
    be averaged over it), None otherwise; ``frame_size``: for a continuous rotation group, the
    number of elements of the PCA frame that :mod:`kdinv.symmetry.frames` averages a model over
    (None otherwise)."""

    acts_on: frozenset[str]
    group_order: int | None = None
    frame_size: int | None = None


TRANSFORM_INFO: dict[str, TransformInfo] = {
    "shift_2d": TransformInfo(frozenset({"image"})),
    "translate_3d": TransformInfo(frozenset({"point_cloud"})),
    "permute_set": TransformInfo(frozenset({"set", "point_cloud"})),
    "rot90_2d": TransformInfo(frozenset({"image"}), group_order=4),
    "flip_2d": TransformInfo(frozenset({"image"}), group_order=2),
    "rot90_z_3d": TransformInfo(frozenset({"point_cloud"}), group_order=4),
    "so2_z_3d": TransformInfo(frozenset({"point_cloud"}), frame_size=2),
    "so3_3d": TransformInfo(frozenset({"point_cloud"}), frame_size=4),
}


def finite_groups() -> list[str]:
    """The transforms a model can be averaged over."""
    return sorted(name for name, info in TRANSFORM_INFO.items() if info.group_order is not None)


def frame_groups() -> list[str]:
    """The continuous groups a model can be frame-averaged over."""
    return sorted(name for name, info in TRANSFORM_INFO.items() if info.frame_size is not None)


def averaging_groups() -> list[str]:
    """Every group a model's ``group_average`` may name: the finite groups (averaged over their
    orbit) and the continuous ones (averaged over a frame)."""
    return sorted(finite_groups() + frame_groups())
