"""Symmetry transformations: one transformed copy per sample, drawn from a seeded generator.

Each transform takes a batch x [N, ...] and a CPU ``torch.Generator`` and returns one transformed
copy per sample; they are registered by name (:data:`TRANSFORMS`) so that a dataset's symmetries
in the config pick theirs. The same draw serves augmented training (a fresh draw per epoch) and
the invariance metric IM (one seeded draw per evaluation).
"""

from __future__ import annotations

from typing import Callable

import torch

from kdinv.config import AUGMENT_KEYS


def _blank_run(blank: torch.Tensor) -> torch.Tensor:
    """Length of the leading run of True along the last dim: [N, L] bool -> [N] int."""
    return blank.int().cumprod(dim=1).sum(dim=1)


def shift_2d(x: torch.Tensor, generator: torch.Generator, max_shift: int = 5, background: float = -1.0):
    """Lossless translation of images by up to ``max_shift`` px in one random axis direction.

    For each image a direction (up, down, left, right) is drawn uniformly; the shift is the
    largest s ≤ max_shift such that the s rows or columns that would wrap around are entirely
    ``background``, so the circular roll equals a translation with background fill (the authors'
    ``shift_preserving_shape``, reference-code-facts §2.2; DECISIONS.md). An image with no blank
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

    The authors' ModelNet translation (``torch.rand(B, 3) * 0.1``, reference-code-facts §3.5;
    DECISIONS.md): every point of a cloud moves by the same t, whose components are non-negative.

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


TRANSFORMS: dict[str, Callable[..., torch.Tensor]] = {
    "shift_2d": shift_2d,
    "translate_3d": translate_3d,
    "permute_set": permute_set,
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
    of 1/6 (reference-code-facts §2.1); without originals, a model trained only on shifted digits
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
