"""Symmetry transformations: one transformed copy per sample, drawn from a seeded generator.

Each transform takes a batch x [N, ...] and a CPU ``torch.Generator`` and returns one transformed
copy per sample; they are registered by name (:data:`TRANSFORMS`) so that a dataset's symmetries
in the config pick theirs. The same draw serves augmented training (a fresh draw per epoch) and
the invariance metric IM (one seeded draw per evaluation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdinv.config import AUGMENT_KEYS
from kdinv.symmetry.catalog import TRANSFORM_INFO


def _blank_run(blank: torch.Tensor) -> torch.Tensor:
    """Length of the leading run of True along the last dim: [N, L] bool -> [N] int."""
    return blank.int().cumprod(dim=1).sum(dim=1)


def shift_2d(x: torch.Tensor, generator: torch.Generator, max_shift: int = 5, background: float = -1.0):
    """Lossless translation of images by up to ``max_shift`` px in one random axis direction.

    For each image a direction (up, down, left, right) is drawn uniformly; the shift is the
    largest s ≤ max_shift such that the s rows or columns that would wrap around are entirely
    ``background``, so the circular roll equals a translation with background fill (the authors'
    ``shift_preserving_shape``, docs/decisions.md). An image with no blank
    border in that direction is returned unchanged.

    Args:
        x: [N, C, H, W] images.
        generator: CPU generator that draws the directions.
    """
    n, _, h, w = x.shape
    blank = (x == background).all(dim=1)  # [N, H, W]
    blank_rows, blank_cols = blank.all(dim=2), blank.all(dim=1)  # [N, H], [N, W]
    room = torch.stack(
        [
            _blank_run(blank_rows),  # up: the top rows wrap to the bottom
            _blank_run(blank_rows.flip(1)),  # down
            _blank_run(blank_cols),  # left
            _blank_run(blank_cols.flip(1)),  # right
        ],
        dim=1,
    )  # [N, 4]
    direction = torch.randint(0, 4, (n,), generator=generator).to(x.device)
    shift = room.gather(1, direction[:, None]).squeeze(1).clamp(max=max_shift)  # [N]
    sign = torch.tensor([-1, 1, -1, 1], device=x.device)[direction] * shift
    dy = torch.where(direction < 2, sign, 0)
    dx = torch.where(direction >= 2, sign, 0)
    rows = (torch.arange(h, device=x.device)[None, :] - dy[:, None]) % h  # [N, H]
    cols = (torch.arange(w, device=x.device)[None, :] - dx[:, None]) % w  # [N, W]
    out = x.gather(2, rows[:, None, :, None].expand_as(x))
    return out.gather(3, cols[:, None, None, :].expand_as(x))


def translate_3d(x: torch.Tensor, generator: torch.Generator, scale: float = 0.1) -> torch.Tensor:
    """Translation of point clouds by one random vector per cloud, t ~ U[0, scale)³.

    The authors' ModelNet translation (``torch.rand(B, 3) * 0.1``, docs/decisions.md): every
    point of a cloud moves by the same t, whose components are non-negative.

    Args:
        x: [N, P, 3] point clouds.
        generator: CPU generator that draws the vectors (float32, then moved to x's device/dtype).
        scale: the upper bound of each component.
    """
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"translate_3d expects point clouds [N, P, 3], got {tuple(x.shape)}")
    t = torch.rand((x.shape[0], 3), generator=generator) * scale  # [N, 3]
    return x + t.to(device=x.device, dtype=x.dtype)[:, None, :]


def permute_set(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """An independent random permutation of the S slots of each set (jets: the 16 constituents).

    Args:
        x: [N, S, ...] sets.
        generator: CPU generator that draws the permutations.
    """
    if x.ndim < 2:
        raise ValueError(f"permute_set expects sets [N, S, ...], got {tuple(x.shape)}")
    n, s = x.shape[:2]
    perm = torch.rand((n, s), generator=generator).argsort(dim=1).to(x.device)  # [N, S]
    return x.gather(1, perm.view(n, s, *([1] * (x.ndim - 2))).expand_as(x))


# ---------------------------------------------------------------------------------------------
# Finite groups: rot90_2d (C4), flip_2d (C2), rot90_z_3d (C4). Each is cyclic, |G| elements
# g^0 = identity, g^1, ..., g^(|G|-1) (|G| from catalog.TRANSFORM_INFO); element k is applied by
# apply_element(name, x, k), enumerated by group_elements(name) for group averaging, and inverted
# by inverse_element(name, k). All act losslessly (permutations of pixels, coordinate swaps and
# sign changes), so element k followed by its inverse returns x bit for bit.

UP_AXIS = 2
"""The up axis of ModelNet40's OFF meshes: z (coordinate index 2); rot90_z_3d rotates about it.

Evidence from the 15 real meshes of the sample (``modelnet40-sample/raw``, read with
:func:`kdinv.data.modelnet.read_off` and :func:`~kdinv.data.modelnet.normalize_mesh`; asserted by
``tests/unit/symmetry/test_groups.py::test_modelnet_up_axis_is_z``):

- airplanes (6 of 6): z is the thinnest axis (extent 0.26-0.60 against 1.29-2.00 for x and y
  after normalisation): the wings lie in the x-y plane;
- chair and stool: z is the longest axis (1.60 and 1.71 against 0.57-1.18): they stand upright;
- gravity breaks the up/down mirror symmetry: reflecting 1,500 surface points about the box
  centre (mean distance to the nearest reflected point), z is never the most mirror-symmetric
  axis (0 of 15 meshes; the left-right axis, x in 12 and y in 3, is) and is the least symmetric
  one in 12 of 15;
- things stand on a floor: chair, stool and flower pot have far more vertices on their lowest z
  plane (within 0.1 % of the extent) than on their top one or on any x or y extreme (chair 64
  against at most 4, stool 48 against at most 12, flower pot 183 against at most 8): the feet and
  the base. Bathtubs 0004 and 0005 have 181 and 848 vertices on their lowest z plane. Up is +z.

(PointNet's HDF5 conversion of ModelNet40 has y up; the raw OFF files this project reads do not.)
"""

_HORIZONTAL = ((UP_AXIS + 1) % 3, (UP_AXIS + 2) % 3)  # (a, b): right-handed about the up axis


def _check_square(x: torch.Tensor, name: str) -> None:
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"{name} needs square images [..., H, W] with H == W (a 90° rotation of a non-square "
            f"grid changes its shape), got {tuple(x.shape)}"
        )


def _rot90_image(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element k of C4 on images: torch.rot90 by k·90° in the (H, W) plane (counter-clockwise)."""
    _check_square(x, "rot90_2d")
    return torch.rot90(x, k % 4, dims=(-2, -1))


def _flip_image(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element k of C2 on images: the identity (k even) or the horizontal mirror (W reversed)."""
    if x.ndim < 2:
        raise ValueError(f"flip_2d needs images [..., H, W], got {tuple(x.shape)}")
    return x.flip(-1) if k % 2 else x


def _rot90_z_points(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element k of C4 on points [..., 3]: k quarter turns about :data:`UP_AXIS`, each mapping
    the horizontal coordinates (a, b) to (−b, a); the up coordinate is unchanged. Only copies and
    sign changes, so exact in floats."""
    if x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(f"rot90_z_3d needs points [..., 3], got {tuple(x.shape)}")
    k %= 4
    if k == 0:
        return x
    a, b = _HORIZONTAL
    xa, xb = x[..., a], x[..., b]
    new_a, new_b = {1: (-xb, xa), 2: (-xa, -xb), 3: (xb, -xa)}[k]
    out = x.clone()
    out[..., a] = new_a
    out[..., b] = new_b
    return out


GROUP_ACTIONS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "rot90_2d": _rot90_image,
    "flip_2d": _flip_image,
    "rot90_z_3d": _rot90_z_points,
}
"""``action(x, k)``: element g^k of each transform's finite cyclic group, on the whole batch."""


def group_order(name: str) -> int:
    """|G| of a finite-group transform (from :data:`kdinv.symmetry.catalog.TRANSFORM_INFO`)."""
    if name not in GROUP_ACTIONS:
        raise ValueError(
            f"{name!r} is not a finite group that can be enumerated; known: {sorted(GROUP_ACTIONS)}"
        )
    return TRANSFORM_INFO[name].group_order


def apply_element(name: str, x: torch.Tensor, k: int) -> torch.Tensor:
    """Element k (0 = the identity, 0 <= k < |G|) of the finite group ``name`` applied to every
    sample of x."""
    order = group_order(name)
    if not 0 <= k < order:
        raise ValueError(f"{name}: element index must be in 0..{order - 1}, got {k}")
    return GROUP_ACTIONS[name](x, k)


def inverse_element(name: str, k: int) -> int:
    """The index of the inverse of element k (the groups are cyclic: (−k) mod |G|)."""
    return (-k) % group_order(name)


def group_elements(name: str) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The |G| elements of the finite group ``name`` as functions of a batch, the identity first
    (what :class:`kdinv.models.wrappers.GroupAveraged` averages over)."""
    action = GROUP_ACTIONS[name]
    return [lambda x, k=k: action(x, k) for k in range(group_order(name))]


def _random_element(name: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One element per sample, drawn uniformly from G without the identity (k in 1..|G|−1).

    With the identity, IM would count unchanged copies and be deflated by 1/|G|; augmented
    training adds the identity back through ``augment_identity_prob``.
    """
    order = group_order(name)
    ks = torch.randint(1, order, (len(x),), generator=generator)  # [N], on the CPU
    out = x.clone()
    for k in ks.unique().tolist():
        mask = (ks == k).to(x.device)
        out[mask] = GROUP_ACTIONS[name](x[mask], k)
    return out


def rot90_2d(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotation of square images by 90°, 180° or 270° (uniform, one per image; never 0°).

    Args:
        x: [N, C, H, W] images with H == W (ValueError otherwise).
        generator: CPU generator that draws the rotations.
    """
    if x.ndim != 4:
        raise ValueError(f"rot90_2d expects images [N, C, H, W], got {tuple(x.shape)}")
    _check_square(x, "rot90_2d")
    return _random_element("rot90_2d", x, generator)


def flip_2d(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Horizontal mirror of every image (C2 without its identity has one element: the mirror).

    Args:
        x: [N, C, H, W] images.
        generator: CPU generator (drawn from like the other transforms, so that the number of
            draws does not depend on the transform).
    """
    if x.ndim != 4:
        raise ValueError(f"flip_2d expects images [N, C, H, W], got {tuple(x.shape)}")
    return _random_element("flip_2d", x, generator)


def rot90_z_3d(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotation of point clouds by 90°, 180° or 270° about the up axis :data:`UP_AXIS` (uniform,
    one per cloud; never 0°).

    Args:
        x: [N, P, 3] point clouds.
        generator: CPU generator that draws the rotations.
    """
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"rot90_z_3d expects point clouds [N, P, 3], got {tuple(x.shape)}")
    return _random_element("rot90_z_3d", x, generator)


# ---------------------------------------------------------------------------------------------
# Continuous rotation groups of point clouds: so2_z_3d (SO(2) about the up axis) and so3_3d (all
# rotations, SO(3)). Their orbits are infinite, so a model is made invariant to them by frame
# averaging (kdinv.symmetry.frames), not by enumerating the group.


def _unit_rotations(n: int, generator: torch.Generator) -> torch.Tensor:
    """n Haar-random rotations [n, 3, 3] (float64): unit quaternions from normalised 4-d Gaussians,
    whose direction is uniform on the 3-sphere, the double cover of SO(3) with its Haar measure."""
    q = torch.randn((n, 4), generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], 1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], 1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], 1),
        ],
        dim=1,
    )


def _up_rotations(n: int, generator: torch.Generator) -> torch.Tensor:
    """n rotations [n, 3, 3] (float64) about :data:`UP_AXIS` by angles θ ~ U[0, 2π), each mapping
    the horizontal coordinates (a, b) to (a cos θ − b sin θ, a sin θ + b cos θ)."""
    theta = 2 * torch.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    c, s = theta.cos(), theta.sin()
    a, b = _HORIZONTAL
    r = torch.zeros((n, 3, 3), dtype=torch.float64)
    r[:, UP_AXIS, UP_AXIS] = 1.0
    r[:, a, a], r[:, a, b], r[:, b, a], r[:, b, b] = c, -s, s, c
    return r


ROTATION_SAMPLERS: dict[str, Callable[[int, torch.Generator], torch.Tensor]] = {
    "so2_z_3d": _up_rotations,
    "so3_3d": _unit_rotations,
}
"""``sampler(n, generator)``: n rotation matrices [n, 3, 3] (float64, on the CPU) of each
continuous rotation transform, drawn from its group's Haar measure."""


def random_rotations(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """n seeded random rotations [n, 3, 3] (float64) of the continuous group ``name``."""
    if name not in ROTATION_SAMPLERS:
        raise ValueError(f"{name!r} is not a continuous rotation group; known: {sorted(ROTATION_SAMPLERS)}")
    return ROTATION_SAMPLERS[name](n, generator)


def rotate_points(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Each cloud x[i] [P, 3] rotated by rotations[i] [3, 3] (points p -> R p), computed in float64
    and returned in x's dtype and device."""
    r = rotations.to(device=x.device, dtype=torch.float64)
    return (x.double() @ r.transpose(1, 2)).to(x.dtype)


def _rotation_transform(name: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name} expects point clouds [N, P, 3], got {tuple(x.shape)}")
    return rotate_points(x, random_rotations(name, x.shape[0], generator))


def so2_z_3d(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotation of point clouds about the up axis :data:`UP_AXIS` by a uniform angle in [0, 2π)
    (one per cloud; about the origin, like rot90_z_3d).

    Args:
        x: [N, P, 3] point clouds.
        generator: CPU generator that draws the angles.
    """
    return _rotation_transform("so2_z_3d", x, generator)


def so3_3d(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotation of point clouds by a Haar-random (uniform) rotation of SO(3), one per cloud, about
    the origin.

    Args:
        x: [N, P, 3] point clouds.
        generator: CPU generator that draws the rotations.
    """
    return _rotation_transform("so3_3d", x, generator)


TRANSFORMS: dict[str, Callable[..., torch.Tensor]] = {
    "shift_2d": shift_2d,
    "translate_3d": translate_3d,
    "permute_set": permute_set,
    "rot90_2d": rot90_2d,
    "flip_2d": flip_2d,
    "rot90_z_3d": rot90_z_3d,
    "so2_z_3d": so2_z_3d,
    "so3_3d": so3_3d,
}


def make_transform(spec: dict) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """The transform of a symmetry's config entry ``{"transform": name, **params}`` (used for IM)."""
    params = {k: v for k, v in spec.items() if k not in AUGMENT_KEYS}
    name = params.pop("transform")
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; known: {sorted(TRANSFORMS)}")
    fn = TRANSFORMS[name]
    return lambda x, generator: fn(x, generator, **params)


def make_augmentation(spec: dict) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Augmented training's per-epoch draw: each sample is left unchanged with probability
    ``augment_identity_prob`` and transformed otherwise.

    The authors' MNIST set held each original once beside 5 shifted copies, i.e. an identity share
    of 1/6 (docs/decisions.md); without originals, a model trained only on shifted digits
    never sees a centred one.
    """
    transform = make_transform(spec)
    keep_prob = float(spec.get("augment_identity_prob", 0.0))

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = transform(x, generator)
        if keep_prob > 0:
            keep = (torch.rand(len(x), generator=generator) < keep_prob).to(x.device)
            out = torch.where(keep.view(-1, *([1] * (x.ndim - 1))), x, out)
        return out

    return augment
