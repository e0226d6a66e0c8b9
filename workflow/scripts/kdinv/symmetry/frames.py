"""PCA frames of point clouds, for frame averaging over continuous rotation groups (Puny et al.,
"Frame Averaging for Invariant and Equivariant Network Design", ICLR 2022).

A frame F(x) is a small set of rotations that moves with the cloud: F(R·x) = R·F(x). Averaging a
backbone over the cloud expressed in each frame's coordinates, (1/|F|) Σ_{V ∈ F(x)} f(V⁻¹·x),
is then exactly invariant to every rotation R, whatever the backbone: the canonical copies
V⁻¹·x of R·x are those of x.

- ``so3_3d`` (all rotations): the eigenvectors v₁, v₂, v₃ of the centred cloud's 3×3 covariance,
  sorted by eigenvalue. Each is defined up to its sign; of the 8 sign choices the 4 whose matrix
  [±v₁ ±v₂ ±v₃] has determinant +1 are proper rotations, and they are the frame.
- ``so2_z_3d`` (rotations about the up axis): the same in the horizontal plane: the eigenvectors
  of the 2×2 covariance of the horizontal coordinates, 2 sign choices with determinant +1
  (V and −V); the up coordinate is only centred.

The cloud is centred (its mean over points subtracted) before its frame is applied, so the
averaged model is also exactly translation-invariant, and the mean and covariance do not depend
on the order of the points, so a permutation-invariant backbone stays permutation-invariant.

Near-degenerate eigenvalues. Where two eigenvalues coincide, their eigenvectors are not
determined and the frame does not move with the cloud, so invariance fails there (an unweighted
frame cannot be continuous for SO(2) or SO(3): Dym, Lawrence and Siegel, ICML 2024). Near a
coincidence the eigenvectors' rounding error grows like ε·λ_max / (λ_{i+1} − λ_i); the frame is
computed in float64 (ε ≈ 1e-16) for every input dtype, so rounding matters only for relative
gaps far below those of sampled meshes. :func:`closest_eigenvalue_ratio` measures how close a
cloud is; on the 15 real ModelNet40 meshes of the sample the largest ratio λᵢ/λᵢ₊₁ of 1,000
sampled points is 0.935 in 3-d and 0.903 in the horizontal plane (docs/beyond.md), and
``tests/unit/symmetry/test_frames.py`` checks the frame-averaged models' invariance on them and shows the
failure on an exactly degenerate cloud.
"""

from __future__ import annotations

import itertools

import torch

from kdinv.symmetry.catalog import TRANSFORM_INFO
from kdinv.symmetry.transforms import _HORIZONTAL, UP_AXIS


def _proper_signs(dim: int) -> torch.Tensor:
    """The sign vectors s ∈ {±1}^dim with Π s = +1, the identity first: [2^(dim−1), dim]."""
    signs = [s for s in itertools.product((1.0, -1.0), repeat=dim) if torch.tensor(s).prod() > 0]
    return torch.tensor(signs, dtype=torch.float64)


_SIGNS = {3: _proper_signs(3), 2: _proper_signs(2)}


def _axes(name: str) -> list[int]:
    """The coordinates a group rotates: all three for so3_3d, the horizontal ones for so2_z_3d."""
    if name == "so3_3d":
        return [0, 1, 2]
    if name == "so2_z_3d":
        return list(_HORIZONTAL)
    raise ValueError(f"{name!r} has no frame; known: {sorted(k for k, v in TRANSFORM_INFO.items() if v.frame_size)}")


def _check(x: torch.Tensor, name: str) -> None:
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name} frames need point clouds [N, P, 3], got {tuple(x.shape)}")


def covariance(x: torch.Tensor, name: str) -> torch.Tensor:
    """The covariance [N, d, d] (float64) of the coordinates ``name`` rotates, of each centred cloud."""
    _check(x, name)
    c = x.double()
    c = c - c.mean(dim=1, keepdim=True)
    c = c[..., _axes(name)]
    return c.transpose(1, 2) @ c / x.shape[1]


def frames(x: torch.Tensor, name: str) -> torch.Tensor:
    """The frame of each cloud: [F, N, d, d] (float64) rotation matrices (d = 3 for so3_3d, 2 for
    so2_z_3d), whose columns are the sign-chosen eigenvectors of the cloud's covariance, sorted by
    ascending eigenvalue. Element 0 is the eigensolver's basis made proper (the last column
    negated where its determinant is −1)."""
    _, vectors = torch.linalg.eigh(covariance(x, name))  # [N, d, d], columns ascending
    det = torch.linalg.det(vectors)
    vectors = vectors.clone()
    vectors[..., -1] = vectors[..., -1] * det.sign()[:, None]
    signs = _SIGNS[vectors.shape[-1]].to(vectors.device)  # [F, d]
    return vectors[None] * signs[:, None, None, :]


def canonical_copies(x: torch.Tensor, name: str) -> torch.Tensor:
    """The |F| canonical copies of a batch, element-major: [|F|·N, P, 3] in x's dtype, rows
    k·N .. k·N + N − 1 holding frame element k. Each cloud is centred, then the coordinates
    ``name`` rotates are expressed in the frame's basis (the up coordinate of so2_z_3d is only
    centred). The copies of R·x + t are those of x (the same set per cloud), up to rounding."""
    _check(x, name)
    f = frames(x, name)  # [F, N, d, d]
    c = x.double()
    c = c - c.mean(dim=1, keepdim=True)
    axes = _axes(name)
    coords = c[..., axes][None] @ f  # [F, N, P, d]: coordinates in the frame's basis
    out = c[None].expand(f.shape[0], *c.shape).clone()
    out[..., axes] = coords
    return out.reshape(-1, *x.shape[1:]).to(x.dtype)


def closest_eigenvalue_ratio(x: torch.Tensor, name: str) -> torch.Tensor:
    """How near each cloud's frame is to degenerate: the largest ratio λᵢ / λᵢ₊₁ of consecutive
    covariance eigenvalues (ascending), [N] float64. 1 means two eigenvalues coincide and the
    frame is undetermined; a cloud whose eigenvalues are all 0 gives NaN."""
    values = torch.linalg.eigvalsh(covariance(x, name))
    return (values[:, :-1] / values[:, 1:]).max(dim=1).values


__all__ = ["UP_AXIS", "canonical_copies", "closest_eigenvalue_ratio", "covariance", "frames"]
