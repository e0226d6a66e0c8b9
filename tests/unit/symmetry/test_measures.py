"""Invariance measured three ways (kdinv/symmetry/measures.py): the orbit gap against an
independent computation, and zero for exactly invariant models; the Lie derivative against a
finite difference, zero for an invariant model and a linear model's closed form; the controls."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from kdinv.models.dgcnn import DGCNN
from kdinv.models.mlp import MLP
from kdinv.models.wrappers import GroupAveraged
from kdinv.symmetry.measures import GENERATORS, finite_groups_of, lie_derivative, measures, orbit_gap
from kdinv.symmetry.transforms import UP_AXIS

CPU = torch.device("cpu")


def images(n=24, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def clouds(n=12, seed=0):
    return torch.randn(n, 16, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def mlp(in_features, hidden=(16,), seed=0):
    torch.manual_seed(seed)
    return MLP(in_features, list(hidden), 5).double().eval()


def test_finite_groups_by_input_kind():
    assert finite_groups_of("image") == ["flip_2d", "rot90_2d"]
    assert finite_groups_of("point_cloud") == ["rot90_z_3d"]
    assert finite_groups_of("set") == []


def test_orbit_gap_equals_an_independent_computation():
    """KL(mean over the four rotations of softmax ‖ softmax), with numpy's rot90 and scipy."""
    x, model = images(), mlp(64)
    with torch.no_grad():
        z = [model(torch.from_numpy(np.rot90(x.numpy(), k, axes=(2, 3)).copy())).numpy() for k in range(4)]
    p = softmax(z[0], axis=1)
    p_g = np.mean([softmax(zk, axis=1) for zk in z], axis=0)
    expected = rel_entr(p_g, p).sum(axis=1).mean()
    assert orbit_gap(model, x, "rot90_2d", 7, CPU) == pytest.approx(expected, rel=1e-10)
    assert expected > 1e-4


@pytest.mark.parametrize("group, data, in_features", [("rot90_2d", images, 64), ("flip_2d", images, 64),
                                                      ("rot90_z_3d", clouds, 48)])
def test_orbit_gap_is_zero_exactly_for_an_invariant_model(group, data, in_features):
    x = data()
    backbone = mlp(in_features)
    assert orbit_gap(backbone, x, group, 32, CPU) > 1e-4
    assert orbit_gap(GroupAveraged(backbone, group), x, group, 32, CPU) < 1e-12
    # it draws no element: the same value every time
    assert orbit_gap(backbone, x, group, 5, CPU) == pytest.approx(orbit_gap(backbone, x, group, 32, CPU), rel=1e-12)


def _flow(name, x, t):
    """The one-parameter group itself, for the finite differences."""
    if name in ("x", "y", "z"):
        out = x.clone()
        out[..., "xyz".index(name)] += t
        return out
    if name == "rotation_up":
        a, b = (UP_AXIS + 1) % 3, (UP_AXIS + 2) % 3
        out = x.clone()
        out[..., a] = math.cos(t) * x[..., a] - math.sin(t) * x[..., b]
        out[..., b] = math.sin(t) * x[..., a] + math.cos(t) * x[..., b]
        return out
    raise KeyError(name)


@pytest.mark.parametrize("transform, name", [("translate_3d", "x"), ("translate_3d", "z"),
                                             ("rot90_z_3d", "rotation_up")])
def test_lie_derivative_equals_a_finite_difference_of_the_flow(transform, name):
    x, model = clouds(), mlp(48, (32, 32))
    eps = 1e-5
    with torch.no_grad():
        fd = (model(_flow(name, x, eps)).log_softmax(1) - model(_flow(name, x, -eps)).log_softmax(1)) / (2 * eps)
    expected = fd.norm(dim=1).mean().item()
    got = lie_derivative(model, x, GENERATORS[transform][name], 5, CPU)
    assert got == pytest.approx(expected, rel=1e-6) and got > 1e-3


@pytest.mark.parametrize("name", ["horizontal", "vertical"])
def test_image_lie_derivative_is_the_derivative_along_its_tangent(name):
    """Sub-pixel image translation: the tangent is the central-difference gradient; the jvp along
    it equals a finite difference along it, and the tangent of a ramp is its slope."""
    x, model = images(), mlp(64, (32,))
    v = GENERATORS["shift_2d"][name](x)
    eps = 1e-5
    with torch.no_grad():
        fd = (model(x + eps * v).log_softmax(1) - model(x - eps * v).log_softmax(1)) / (2 * eps)
    assert lie_derivative(model, x, GENERATORS["shift_2d"][name], 5, CPU) == pytest.approx(
        fd.norm(dim=1).mean().item(), rel=1e-6)
    ramp = torch.arange(8, dtype=torch.float64).expand(1, 1, 8, 8)
    ramp = ramp if name == "horizontal" else ramp.transpose(-1, -2)
    # moving a ramp that rises by 1 per pixel right (or down) by t lowers each inner pixel by t
    assert torch.equal(
        GENERATORS["shift_2d"][name](ramp)[..., 1:-1, 1:-1], -torch.ones(1, 1, 6, 6, dtype=torch.float64)
    )


def test_lie_derivative_of_a_linear_model_has_its_closed_form():
    """f(x) = W·vec(x) + b: d/dt log softmax(f(x + t v)) = W v − (pᵀ W v) 1."""
    torch.manual_seed(1)
    model = MLP(48, [], 5).double().eval()
    x = clouds()
    linear = model.net[0]
    v = GENERATORS["translate_3d"]["y"](x)
    with torch.no_grad():
        p = model(x).softmax(1)
        wv = v.flatten(1) @ linear.weight.T
        expected = (wv - (p * wv).sum(1, keepdim=True)).norm(dim=1).mean().item()
    assert lie_derivative(model, x, GENERATORS["translate_3d"]["y"], 4, CPU) == pytest.approx(expected, rel=1e-10)


def test_an_invariant_model_has_a_zero_lie_derivative():
    """DGCNN's edge function sees x_j − x_i and its kNN the centred cloud: translation-invariant,
    so its derivative along every translation is 0, while an MLP's is not."""
    torch.manual_seed(0)
    dgcnn = DGCNN(3, 5, k=4, edge_layers=((8,), (8,)), embedding=16, head=(8,)).double().eval()
    x = clouds()
    for name, v in GENERATORS["translate_3d"].items():
        assert lie_derivative(dgcnn, x, v, 6, CPU) < 1e-10, name
        assert lie_derivative(mlp(48), x, v, 6, CPU) > 1e-3


def test_controls_tell_invariance_from_insensitivity():
    """The group average is invariant but reacts to other changes (measure 0, control > 0); a
    nearly constant model is small on both, so only the ratio tells them apart."""
    x = images()
    averaged = GroupAveraged(mlp(64), "rot90_2d")
    dull = mlp(64)
    with torch.no_grad():
        for param in dull.parameters():
            param.mul_(1e-3)
    inv = measures(averaged, x, {"translation": {"transform": "shift_2d"}}, "image", 32, CPU, seed=3)["runs"]
    flat = measures(dull, x, {"translation": {"transform": "shift_2d"}}, "image", 32, CPU, seed=3)
    assert inv["orbit_gap_rot90_2d"] < 1e-12 and inv["orbit_gap_rot90_2d_random"] > 1e-4
    runs = flat["runs"]
    assert runs["orbit_gap_rot90_2d"] < 1e-6 and runs["orbit_gap_rot90_2d_random"] < 1e-6
    assert 0.1 < runs["orbit_gap_rot90_2d"] / runs["orbit_gap_rot90_2d_random"] < 10
    lie = flat["symmetries"]["translation"]
    assert lie["lie"] < 1e-2 and 0.1 < lie["lie"] / lie["lie_random"] < 10
    # the same seed draws the same controls
    again = measures(dull, x, {"translation": {"transform": "shift_2d"}}, "image", 32, CPU, seed=3)
    assert again == flat


def test_a_symmetry_without_a_continuous_generator_has_no_lie_derivative():
    out = measures(mlp(18), torch.randn(4, 6, 3, dtype=torch.float64), {"permutation": {"transform": "permute_set"}},
                   "set", 4, CPU, seed=0)
    assert out["runs"] == {} and all(math.isnan(v) for v in out["symmetries"]["permutation"].values())
