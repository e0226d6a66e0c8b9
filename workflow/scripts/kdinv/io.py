"""Tensor files: written atomically, loaded without executing code.

Every ``.pt`` file of the workflow (split files, folds, checkpoints, cached logits, resume states)
goes through :func:`save_tensors` (a temporary name beside the target, then an atomic rename) and
:func:`load_tensors` (``weights_only=True``, so a file can never run code when unpickled).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


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
