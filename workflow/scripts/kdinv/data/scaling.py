"""Input scaling fitted on a fold's training part, carried inside the model.

The jets row scales each constituent feature robustly, (x − median) / (P95 − P5), with
statistics of the fold's training part (docs/decisions.md; the authors fitted them on their whole
training split, padded slots included, as here). The statistics are computed once by the fold job,
stored in the fold file, and every model trained on that fold wraps them as fixed buffers
(:class:`kdinv.models.wrappers.Standardized`), so the split files, the teacher caches and the symmetry transforms all
work on raw features and an evaluation cannot apply the wrong fold's statistics.
"""

from __future__ import annotations

import numpy as np
import torch

METHODS = ("robust",)


def fit_scaling(x: torch.Tensor | np.ndarray, method: str) -> dict[str, torch.Tensor]:
    """Per-feature ``center`` and ``scale`` over every sample and slot of ``x`` [N, ..., F].

    ``robust``: center = median, scale = P95 − P5 (linear interpolation, as ``np.nanpercentile``
    in the authors' code); a feature with P95 == P5 (constant) gets scale 1 rather than a division
    by zero.
    """
    if method not in METHODS:
        raise ValueError(f"unknown input scaling {method!r}; known: {list(METHODS)}")
    flat = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
    center = np.median(flat, axis=0)
    p5, p95 = np.percentile(flat, [5, 95], axis=0)
    scale = p95 - p5
    scale[scale == 0] = 1.0
    return {
        "center": torch.as_tensor(center, dtype=torch.float32),
        "scale": torch.as_tensor(scale, dtype=torch.float32),
    }
