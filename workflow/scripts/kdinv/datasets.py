"""Dataset-independent pieces: the split files, stratified folds and symmetry transformations.

Every dataset's preparation rule writes the same format, so training, distillation and
evaluation never know which dataset they run on:

- ``results/{dataset}/data/{train,test}.pt``: ``{"x": float32 [N, ...], "y": int64 [N],
  "num_classes": int}``.
- ``results/{dataset}/folds/fold{i}.pt``: ``{"train": int64 indices, "val": int64 indices,
  "fold": i, "k": k, "seed": seed}`` into the training split.

Files are written to a temporary name and renamed, and loaded with ``weights_only=True`` so a
file can never run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kdinv.config import AUGMENT_KEYS


def save_tensors(obj: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary name beside ``path``, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_tensors(path: str | Path, mmap: bool = False) -> dict:
    """Load a file written by :func:`save_tensors` without executing code (``weights_only``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises several types for unpicklable or corrupt files
        raise ValueError(f"{path}: cannot be loaded safely ({type(err).__name__}: {err})") from err


def save_split(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, num_classes: int, path) -> None:
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.int64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: {x.shape[0]} inputs but {y.shape[0]} labels")
    save_tensors({"x": x.contiguous(), "y": y.contiguous(), "num_classes": int(num_classes)}, path)


def load_split(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Return (x, y, num_classes) of a split file, checking its layout."""
    data = load_tensors(path)
    missing = {"x", "y", "num_classes"} - set(data)
    if missing:
        raise ValueError(f"{path}: not a split file, keys {sorted(missing)} are missing")
    x, y = data["x"], data["y"]
    if x.shape[0] != y.shape[0] or y.ndim != 1:
        raise ValueError(f"{path}: inputs {tuple(x.shape)} and labels {tuple(y.shape)} do not match")
    return x, y, int(data["num_classes"])


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k stratified folds of the training split: fold i validates on part i, trains on the rest."""
    from sklearn.model_selection import StratifiedKFold  # slow to import; only this job needs it

    if k < 2:
        raise ValueError(f"folds must be >= 2, got {k}")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    labels = np.asarray(labels)
    return [
        (np.sort(train), np.sort(val))
        for train, val in splitter.split(np.zeros(len(labels)), labels)
    ]


def write_folds(
    train_split: str | Path, k: int, seed: int, outputs: list[str | Path], scaling: str | None = None
) -> None:
    """Write the k fold files; with ``scaling`` (e.g. "robust") each also holds the input
    statistics of its training part (see :mod:`kdinv.scaling`)."""
    if len(outputs) != k:
        raise ValueError(f"expected {k} fold outputs, got {len(outputs)}")
    data = load_tensors(train_split, mmap=True)
    labels = data["y"].numpy()
    for i, ((train, val), out) in enumerate(zip(stratified_folds(labels, k, seed), outputs)):
        fold = {"train": torch.from_numpy(train), "val": torch.from_numpy(val), "fold": i, "k": k, "seed": seed}
        if scaling is not None:
            from kdinv.scaling import fit_scaling

            stats = fit_scaling(data["x"][torch.from_numpy(train)], scaling)
            fold.update({"scaling": scaling, "input_center": stats["center"], "input_scale": stats["scale"]})
        save_tensors(fold, out)


def load_fold(path: str | Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices) of a fold file, checked against a training split of n samples."""
    fold = load_tensors(path)
    train, val = fold["train"], fold["val"]
    if len(train) + len(val) != n or int(max(train.max(), val.max())) >= n:
        raise ValueError(f"{path}: fold indices do not fit a training split of {n} samples")
    return train, val


def load_fold_scaling(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The fold's input statistics ``{"center", "scale"}``, or None for a dataset without scaling."""
    fold = load_tensors(path)
    if "input_center" not in fold:
        return None
    return {"center": fold["input_center"], "scale": fold["input_scale"]}


# ---------------------------------------------------------------------------------------------
# Symmetry transformations. Each takes a batch x [N, ...] and a torch.Generator and returns one
# transformed copy per sample; registered by name so rows pick theirs in the config.


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
