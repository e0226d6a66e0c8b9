"""The dataset-independent file formats: split files and stratified folds.

Every dataset's preparation rule writes the same format, so training, distillation and
evaluation never know which dataset they run on:

- ``results/{dataset}/data/{train,test}.pt``: ``{"x": float32 [N, ...], "y": int64 [N],
  "num_classes": int}``.
- ``results/{dataset}/folds/fold{i}.pt``: ``{"train": int64 indices, "val": int64 indices,
  "fold": i, "k": k, "seed": seed}`` into the training split.

Files are written and read through :mod:`kdinv.io` (atomic, ``weights_only``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from kdinv.io import load_tensors, save_tensors

log = logging.getLogger(__name__)


def save_split(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    num_classes: int,
    path,
    classes: list[str] | None = None,
) -> None:
    """Write a split file; ``classes`` (the class names in label order) lets later steps name a
    class in their messages."""
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.int64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: {x.shape[0]} inputs but {y.shape[0]} labels")
    if classes is not None and len(classes) != num_classes:
        raise ValueError(f"{path}: {len(classes)} class names for {num_classes} classes")
    data = {"x": x.contiguous(), "y": y.contiguous(), "num_classes": int(num_classes)}
    if classes is not None:
        data["classes"] = [str(c) for c in classes]
    save_tensors(data, path)


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


def stratified_folds(
    labels: np.ndarray, k: int, seed: int, classes: list[str] | None = None, what: str = "the training split"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k stratified folds of the training split: fold i validates on part i, trains on the rest.

    Every class needs at least k samples, or some part lacks it (scikit-learn only warns); a
    class with fewer is an error that names it (``classes``: names in label order) and its count.
    """
    from sklearn.model_selection import StratifiedKFold  # slow to import; only this job needs it

    if k < 2:
        raise ValueError(f"folds must be >= 2, got {k}")
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    short = [(int(v), int(c)) for v, c in zip(values, counts) if c < k]
    if short:
        names = ", ".join(
            f"class {classes[v] if classes else v!r} (label {v}) has {c}" for v, c in short
        )
        raise ValueError(
            f"{what}: folds = {k} needs at least {k} samples of every class, but {names}; "
            f"lower folds to {int(counts.min())} or fewer, or use more data"
        )
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
    statistics of its training part (see :mod:`kdinv.data.scaling`)."""
    if len(outputs) != k:
        raise ValueError(f"expected {k} fold outputs, got {len(outputs)}")
    data = load_tensors(train_split, mmap=True)
    labels = data["y"].numpy()
    parts = stratified_folds(labels, k, seed, classes=data.get("classes"), what=str(train_split))
    for i, ((train, val), out) in enumerate(zip(parts, outputs)):
        fold = {"train": torch.from_numpy(train), "val": torch.from_numpy(val), "fold": i, "k": k, "seed": seed}
        if scaling is not None:
            from kdinv.data.scaling import fit_scaling

            stats = fit_scaling(data["x"][torch.from_numpy(train)], scaling)
            fold.update({"scaling": scaling, "input_center": stats["center"], "input_scale": stats["scale"]})
        save_tensors(fold, out)
    log.info("wrote %d folds (seed %d)", k, seed)


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
