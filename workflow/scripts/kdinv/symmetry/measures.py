"""Invariance measured three ways, each with a control for insensitivity (docs/method.md,
"Invariance measured three ways").

- **IM** (the paper's, :func:`kdinv.metrics.invariance`): ‖p(x) − p(g·x)‖₂ for one drawn g per
  sample.
- **Orbit gap** (:func:`orbit_gap`): KL(p_G(x) ‖ p(x)) with p_G(x) = (1/|G|) Σ_g p(g·x), the
  model's distance to its own average over a finite group. It involves every element of G, not a
  drawn one, and is 0 exactly when p is G-invariant: p = p_G everywhere implies p(h·x) = p_G(h·x)
  = p_G(x) = p(x).
- **Lie derivative** (:func:`lie_derivative`, Gruver et al., ICLR 2023): ‖d/dt log p(φ_t(x))|₀‖₂
  for a one-parameter group φ_t (a continuous symmetry), by forward-mode autodiff (the dual
  numbers of ``torch.autograd.forward_ad``, on which ``torch.func.jvp`` is built; they also run on
  tensor subclasses) with the tangent v(x) = dφ_t(x)/dt|₀ of :data:`GENERATORS`. 0 for a model
  invariant to φ.

A model that barely reacts to any change of its input scores low on all three without being
invariant in any useful sense (Moskalev et al., 2023). So each measure is computed again with the
symmetry's displacement replaced by a random one of the same size, per sample (the ``_random``
values): the same norm as g·x − x for IM and the orbit gap, as v(x) for the Lie derivative, in a
direction drawn uniformly (a normalised Gaussian). A model is invariant, rather than insensitive,
where the measure is far below its control.

p = softmax of the model's logits; every mean is over the samples given.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd import forward_ad

from kdinv.symmetry.transforms import UP_AXIS, apply_element, group_order

Generator = Callable[[torch.Tensor], torch.Tensor]


def _translation(axis: int) -> Generator:
    def v(x: torch.Tensor) -> torch.Tensor:  # every point moves along the axis
        out = torch.zeros_like(x)
        out[..., axis] = 1.0
        return out

    return v


def _rotation_about_up(x: torch.Tensor) -> torch.Tensor:
    """d/dt of the rotation by t about :data:`UP_AXIS`: (a, b) -> (−b, a), the up coordinate fixed."""
    a, b = (UP_AXIS + 1) % 3, (UP_AXIS + 2) % 3
    out = torch.zeros_like(x)
    out[..., a] = -x[..., b]
    out[..., b] = x[..., a]
    return out


def _image_shift(dim: int) -> Generator:
    """d/dt of an image moved by t pixels along ``dim`` (−1: to the right, −2: down): −∂x/∂u,
    by central differences with the border pixel repeated outside the image. Approximate: an
    image is a grid of samples; the central difference is the derivative of the interpolation
    that averages the two one-sided linear ones."""

    def v(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[dim]
        ahead = x.index_select(dim, torch.arange(1, n + 1, device=x.device).clamp(max=n - 1))
        behind = x.index_select(dim, torch.arange(-1, n - 1, device=x.device).clamp(min=0))
        return -(ahead - behind) / 2

    return v


GENERATORS: dict[str, dict[str, Generator]] = {
    "translate_3d": {"x": _translation(0), "y": _translation(1), "z": _translation(2)},
    "rot90_z_3d": {"rotation_up": _rotation_about_up},
    "shift_2d": {"horizontal": _image_shift(-1), "vertical": _image_shift(-2)},
}
"""The continuous one-parameter symmetries behind each transform, as tangents v(x): translations
of point clouds along each axis; rotation about the up axis, the continuous group of which the
quarter turns of rot90_z_3d are a subgroup; sub-pixel translation of images (approximate). The
permutations of sets and the image rotations and flips have none here."""


def _random_like(displacement: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random displacement with, per sample, the norm of ``displacement`` (a normalised
    Gaussian direction)."""
    noise = torch.randn(displacement.shape, generator=generator, dtype=displacement.dtype)
    noise = noise.to(displacement.device)
    dims = tuple(range(1, displacement.ndim))
    scale = displacement.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1).clamp_min(1e-30)
    return noise * scale.view(-1, *([1] * len(dims)))


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size]


def _probs(model, x, device):
    return model(x.to(device)).double().softmax(dim=1)


@torch.no_grad()
def im_random(model: torch.nn.Module, x: torch.Tensor, moved: torch.Tensor, batch_size: int,
              device: torch.device, generator: torch.Generator) -> float:
    """IM's control: ‖p(x) − p(x + δ)‖₂ with ‖δ‖ = ‖x′ − x‖ per sample (``moved`` = x′, IM's copies)."""
    model.to(device).eval()
    total = 0.0
    for xb, mb in zip(_batches(x, batch_size), _batches(moved, batch_size)):
        delta = _random_like(mb - xb, generator)
        total += (_probs(model, xb, device) - _probs(model, xb + delta, device)).norm(dim=1).sum().item()
    return total / len(x)


@torch.no_grad()
def orbit_gap(model: torch.nn.Module, x: torch.Tensor, group: str, batch_size: int, device: torch.device,
              generator: torch.Generator | None = None) -> float:
    """Mean over samples of KL(p_G(x) ‖ p(x)) for the finite group ``group`` (a transform of
    :data:`kdinv.symmetry.transforms.GROUP_ACTIONS`). With ``generator``, the control: element k's
    displacement g_k·x − x replaced by a random one of the same norm (the identity kept)."""
    model.to(device).eval()
    order = group_order(group)
    total = 0.0
    for xb in _batches(x, batch_size):
        p = _probs(model, xb, device)
        p_g = p.clone()
        for k in range(1, order):
            moved = apply_element(group, xb, k)
            if generator is not None:
                moved = xb + _random_like(moved - xb, generator)
            p_g += _probs(model, moved, device)
        p_g /= order
        kl = (p_g * (p_g.clamp_min(1e-300).log() - p.clamp_min(1e-300).log())).sum(dim=1)
        total += kl.sum().item()
    return total / len(x)


def _rms_tangent(tangents: list[Generator]) -> Generator:
    """A tangent whose norm per sample is the root mean square of ``tangents``' norms (the size
    of the random control of a symmetry with several generators)."""

    def v(x: torch.Tensor) -> torch.Tensor:
        norms = torch.stack([t(x).flatten(1).norm(dim=1) for t in tangents])  # [k, N]
        out = torch.zeros_like(x)
        out.flatten(1)[:, 0] = norms.square().mean(0).sqrt()
        return out

    return v


def lie_derivative(model: torch.nn.Module, x: torch.Tensor, tangent: Generator, batch_size: int,
                   device: torch.device, generator: torch.Generator | None = None) -> float:
    """Mean over samples of ‖d/dt log p(φ_t(x))|₀‖₂, the jvp of the log-probabilities along
    ``tangent(x)`` (one generator of :data:`GENERATORS`). With ``generator``, the control: the
    tangent replaced by a random one of the same norm per sample."""
    model.to(device).eval()

    def log_probs(inp):
        return model(inp).log_softmax(dim=1)

    total = 0.0
    for xb in _batches(x, batch_size):
        xb = xb.to(device)
        v = tangent(xb)
        if generator is not None:
            v = _random_like(v, generator)
        with torch.no_grad(), forward_ad.dual_level():
            d = forward_ad.unpack_dual(log_probs(forward_ad.make_dual(xb, v.to(xb.dtype)))).tangent
        total += d.double().norm(dim=1).sum().item()
    return total / len(x)


def finite_groups_of(input_kind: str) -> list[str]:
    """The finite groups that act on ``input_kind`` (kdinv.symmetry.catalog), for the orbit gap."""
    from kdinv.symmetry.catalog import TRANSFORM_INFO

    return sorted(name for name, info in TRANSFORM_INFO.items()
                  if info.group_order is not None and input_kind in info.acts_on)


def measures(model: torch.nn.Module, x: torch.Tensor, symmetries: dict[str, dict], input_kind: str,
             batch_size: int, device: torch.device, seed: int) -> dict:
    """Every measure of this module for one model on ``x``: ``{"runs": {orbit_gap_<group>,
    orbit_gap_<group>_random}, "symmetries": {name: {lie, lie_random}}}``; the Lie derivative is the
    mean over the symmetry's generators (its control one random tangent per sample, of the
    generators' root-mean-square norm), NaN for a symmetry without one. Random draws are seeded
    with ``seed``, the same for every model."""
    out = {"runs": {}, "symmetries": {}}
    for group in finite_groups_of(input_kind):
        out["runs"][f"orbit_gap_{group}"] = orbit_gap(model, x, group, batch_size, device)
        out["runs"][f"orbit_gap_{group}_random"] = orbit_gap(
            model, x, group, batch_size, device, torch.Generator().manual_seed(seed))
    for name, spec in symmetries.items():
        gens = GENERATORS.get(spec["transform"], {})
        if not gens:
            out["symmetries"][name] = {"lie": float("nan"), "lie_random": float("nan")}
            continue
        lie = [lie_derivative(model, x, v, batch_size, device) for v in gens.values()]
        # the control: one random direction per sample, of the generators' root-mean-square size
        rnd = lie_derivative(model, x, _rms_tangent(list(gens.values())), batch_size, device,
                             torch.Generator().manual_seed(seed))
        out["symmetries"][name] = {"lie": sum(lie) / len(lie), "lie_random": rnd}
    return out
