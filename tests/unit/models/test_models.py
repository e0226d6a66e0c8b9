"""Tests for kdinv.models: ResNet18-APS shift invariance, the MLP, parameter counts, registry."""

import itertools
import math

import pytest
import torch
from torch import nn

from kdinv.models import ARCHITECTURES, MLP, APSDown, ResNet18APS, build_model
from kdinv.models.resnet import CircularConv2d, circular_pad

SHIFTS = [(s * sign, 0) for s in range(1, 6) for sign in (1, -1)] + [
    (0, s * sign) for s in range(1, 6) for sign in (1, -1)
]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def calibrated_resnet(width: int, size: int = 32, seed: int = 0) -> ResNet18APS:
    """Random-init ResNet18APS whose BN running stats come from a few train-mode passes."""
    torch.manual_seed(seed)
    model = ResNet18APS(in_channels=1, num_classes=10, width=width)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, size, size))
    return model.eval()


def shifted_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits on x (N, C) and on every shift in SHIFTS (len(SHIFTS), N, C), in one batch."""
    rolled = [torch.roll(x, shifts=s, dims=(2, 3)) for s in SHIFTS]
    with torch.no_grad():
        z = model(torch.cat([x, *rolled]))
    z = z.reshape(1 + len(SHIFTS), x.shape[0], -1)
    return z[0], z[1:]


def invariance_measure(z: torch.Tensor, z_shifted: torch.Tensor) -> torch.Tensor:
    """IM per shift: mean over samples of ||softmax(z) - softmax(z')||_2 (paper Eq. 3)."""
    return (z.softmax(-1) - z_shifted.softmax(-1)).norm(dim=-1).mean(dim=-1)


def reference_components(x: torch.Tensor) -> list[torch.Tensor]:
    """Blur and polyphase split, transcribed from the reference implementation (filter size 4)."""
    filt = torch.tensor([1.0, 3.0, 3.0, 1.0])
    filt = torch.outer(filt, filt) / 64.0
    c = x.shape[1]
    x = nn.functional.pad(x, (1, 2, 1, 2), mode="circular")
    x = nn.functional.conv2d(x, filt[None, None].repeat(c, 1, 1, 1), groups=c)
    if x.shape[2] % 2:
        x = nn.functional.pad(x, (0, 0, 0, 1), mode="circular")
    if x.shape[3] % 2:
        x = nn.functional.pad(x, (0, 1, 0, 0), mode="circular")
    return [x[:, :, ::2, ::2], x[:, :, 1::2, ::2], x[:, :, ::2, 1::2], x[:, :, 1::2, 1::2]]


def reference_aps(x: torch.Tensor) -> torch.Tensor:
    """Per-sample loop version of APS with the l2 criterion."""
    components = reference_components(x)
    outputs = []
    for i in range(x.shape[0]):
        norms = torch.stack([torch.norm(p[i]) for p in components])
        outputs.append(components[int(norms.argmax())][i])
    return torch.stack(outputs)


# ---------------------------------------------------------------- circular padding


@pytest.mark.parametrize("pad", [(1, 1, 1, 1), (1, 2, 1, 2), (0, 1, 0, 1), (0, 1, 0, 0), (0, 0, 1, 0), (3, 0, 0, 2)])
def test_circular_pad_equals_torch_circular_pad(pad):
    """Values, and gradients to rounding, of torch's own circular mode (the independent one)."""
    torch.manual_seed(4)
    x = torch.randn(2, 3, 7, 6, requires_grad=True)
    ours = circular_pad(x, pad)
    theirs = nn.functional.pad(x, pad, mode="circular")
    assert torch.equal(ours, theirs)
    weight = torch.randn_like(theirs)
    (grad_ours,) = torch.autograd.grad((ours * weight).sum(), x)
    (grad_theirs,) = torch.autograd.grad((theirs * weight).sum(), x)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-6, atol=1e-6)


def test_circular_conv_equals_torch_circular_conv():
    """Same parameters and state dict as ``nn.Conv2d(padding_mode="circular")``, same outputs."""
    torch.manual_seed(5)
    ours = CircularConv2d(3, 4, 3, padding=1, padding_mode="circular", bias=True)
    theirs = nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular", bias=True)
    theirs.load_state_dict(ours.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(2, 3, 9, 8)
    assert torch.equal(ours(x), theirs(x))
    zeros = CircularConv2d(3, 4, 3, padding=1, bias=False)  # another padding mode: nn.Conv2d's own
    reference = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    reference.load_state_dict(zeros.state_dict())
    assert torch.equal(zeros(x), reference(x))


def test_resnet_outputs_do_not_depend_on_the_padding_implementation(monkeypatch):
    """The whole ResNet with torch's circular padding everywhere gives the same logits."""
    from kdinv.models import resnet

    torch.manual_seed(6)
    model = ResNet18APS(1, 10, width=8).eval()
    x = torch.randn(4, 1, 28, 28)
    ours = model(x)
    monkeypatch.setattr(resnet, "circular_pad", lambda t, pad: nn.functional.pad(t, pad, mode="circular"))
    monkeypatch.setattr(CircularConv2d, "_conv_forward", nn.Conv2d._conv_forward)
    assert torch.equal(model(x), ours)


# ---------------------------------------------------------------- APS


@pytest.mark.parametrize("size", [8, 7, 14])
def test_aps_matches_reference_transcription(size):
    torch.manual_seed(1)
    x = torch.randn(5, 3, size, size)
    out, index = APSDown()(x)
    assert out.shape == (5, 3, (size + 1) // 2, (size + 1) // 2)
    assert index.shape == (5,)
    torch.testing.assert_close(out, reference_aps(x), rtol=0, atol=1e-6)


def test_aps_is_shift_equivariant_and_reuses_index():
    torch.manual_seed(2)
    aps = APSDown()
    x = torch.randn(4, 2, 16, 16)
    out, index = aps(x)
    for shift in (2, 4, 6):
        out_shifted, _ = aps(torch.roll(x, shifts=(shift, -shift), dims=(2, 3)))
        expected = torch.roll(out, shifts=(shift // 2, -shift // 2), dims=(2, 3))
        torch.testing.assert_close(out_shifted, expected, rtol=0, atol=1e-6)
    other = torch.randn(4, 5, 16, 16)
    forced, same_index = aps(other, index)
    assert torch.equal(same_index, index)
    components = reference_components(other)
    for i, k in enumerate(index.tolist()):
        torch.testing.assert_close(forced[i], components[k][i], rtol=0, atol=1e-6)


def test_downsampling_shortcut_reuses_main_branch_index():
    torch.manual_seed(8)
    model = ResNet18APS(1, 10, 8).eval()
    blocks = [model.layer2[0], model.layer3[0], model.layer4[0]]
    recorded: dict[str, torch.Tensor] = {}
    for n, block in enumerate(blocks):
        for branch, aps in (("main", block.down), ("shortcut", block.shortcut["down"])):
            aps.register_forward_hook(
                lambda mod, args, out, key=f"{n}-{branch}": recorded.__setitem__(key, out[1])
            )
    with torch.no_grad():
        model(torch.randn(16, 1, 32, 32))
    for n in range(len(blocks)):
        assert torch.equal(recorded[f"{n}-main"], recorded[f"{n}-shortcut"])
    # With 16 samples the choice is not the same for all, so reuse is not a coincidence.
    assert len(set(recorded["0-main"].tolist())) > 1


def test_aps_buffer_is_normalised_binomial_and_not_trained():
    aps = APSDown()
    filt = dict(aps.named_buffers())["filt"]
    expected = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    torch.testing.assert_close(filt[0, 0], expected)
    assert list(aps.parameters()) == []


# ---------------------------------------------------------------- invariance


@pytest.mark.parametrize("width", [8, 16])
def test_resnet_aps_is_shift_invariant_on_32x32(width):
    model = calibrated_resnet(width)
    torch.manual_seed(10)
    x = torch.randn(8, 1, 32, 32)
    z, z_shifted = shifted_outputs(model, x)
    im = invariance_measure(z, z_shifted)
    assert im.max() <= 1e-4, dict(zip(SHIFTS, im.tolist(), strict=True))
    torch.testing.assert_close(z_shifted, z.expand_as(z_shifted), rtol=0, atol=1e-4)
    # The outputs are not trivially constant: different inputs are far apart.
    assert invariance_measure(z, z.roll(1, dims=0)) > 1e-3


@pytest.mark.slow
def test_resnet_aps_width64_is_shift_invariant_on_32x32():
    model = calibrated_resnet(64)
    torch.manual_seed(11)
    x = torch.randn(2, 1, 32, 32)
    z, z_shifted = shifted_outputs(model, x)
    assert invariance_measure(z, z_shifted).max() <= 1e-4
    torch.testing.assert_close(z_shifted, z.expand_as(z_shifted), rtol=0, atol=1e-4)


def test_resnet_with_fixed_polyphase_is_not_invariant(monkeypatch):
    """Control: the invariance test detects a downsampling that ignores the polyphase choice."""
    original = APSDown.forward

    def fixed_phase(self, x, index=None):
        return original(self, x, torch.zeros(x.shape[0], dtype=torch.long))

    model = calibrated_resnet(8)
    monkeypatch.setattr(APSDown, "forward", fixed_phase)
    torch.manual_seed(10)
    z, z_shifted = shifted_outputs(model, torch.randn(8, 1, 32, 32))
    assert invariance_measure(z, z_shifted).max() > 1e-3


@pytest.mark.slow
def test_resnet_aps_is_only_approximately_invariant_on_28x28():
    """Odd 7x7 maps are padded to 8x8, which breaks exactness (pad_to, docs/decisions.md)."""
    model = calibrated_resnet(8, size=28)
    torch.manual_seed(12)
    z, z_shifted = shifted_outputs(model, torch.randn(8, 1, 28, 28))
    im = invariance_measure(z, z_shifted)
    assert im.max() > 1e-4
    assert im.max() < 0.1


def test_mlp_is_not_shift_invariant():
    torch.manual_seed(3)
    model = MLP(1024, [64, 64], 10).eval()
    z, z_shifted = shifted_outputs(model, torch.randn(8, 1, 32, 32))
    assert invariance_measure(z, z_shifted).min() > 1e-3


# ---------------------------------------------------------------- parameter counts


def mlp_param_count(in_features: int, hidden: list[int], num_classes: int) -> int:
    sizes = [in_features, *hidden, num_classes]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def test_parameter_counts():
    with torch.device("meta"):
        assert n_params(ResNet18APS(1, 10, 64)) == 11_172_810
        assert n_params(MLP(784, [2048] * 5, 10)) == 18_413_578
        assert mlp_param_count(784, [2048] * 5, 10) == 18_413_578
        count_1024 = 1024 * 2048 + 2048 + 3 * (2048 * 2048 + 2048) + 2048 * 10 + 10
        assert count_1024 == mlp_param_count(1024, [2048] * 4, 10) == 14_708_746
        assert n_params(MLP(1024, [2048] * 4, 10)) == count_1024


def test_resnet_init_follows_reference():
    torch.manual_seed(4)
    model = ResNet18APS(1, 10, 16)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    # Kaiming normal, fan_out: std = sqrt(2 / (out_channels * k * k)).
    conv = model.layer3[0].conv1  # 2w -> 4w channels, so fan_out != fan_in
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    # The stem keeps PyTorch's default init: uniform with bound 1/sqrt(fan_in) = 1/3.
    assert model.conv1.weight.abs().max() <= 1 / 3


# ---------------------------------------------------------------- shapes, gradients, devices


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_output_shapes(batch, size):
    torch.manual_seed(5)
    resnet = ResNet18APS(1, 10, 8).eval()
    mlp = MLP(size * size, [32, 32], 10)
    x = torch.randn(batch, 1, size, size)
    with torch.no_grad():
        assert resnet(x).shape == (batch, 10)
        assert mlp(x).shape == (batch, 10)
    assert resnet(x).shape == (batch, 10)


@pytest.mark.parametrize("size", [28, 32])
def test_backward_gives_finite_gradients(size):
    torch.manual_seed(6)
    x = torch.randn(3, 1, size, size)
    y = torch.tensor([0, 4, 9])
    for model in (ResNet18APS(1, 10, 8).train(), MLP(size * size, [32], 10)):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
        assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_resnet_multichannel_input_and_too_small_input():
    model = ResNet18APS(in_channels=3, num_classes=4, width=8).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
        with pytest.raises(ValueError, match="too small"):
            model(torch.randn(2, 3, 8, 8))


def test_mlp_rejects_wrong_input_size():
    with pytest.raises(ValueError, match="784"):
        MLP(784, [8], 10)(torch.randn(2, 1, 32, 32))


def test_models_are_device_agnostic():
    devices = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        with torch.device(device):
            model = ResNet18APS(1, 10, 8).eval()
            x = torch.randn(2, 1, 32, 32)
        assert model(x).device.type == device


# ---------------------------------------------------------------- registry


def test_build_model_resnet():
    torch.manual_seed(7)
    model = build_model("resnet18_aps", {"width": 8}, (3, 32, 32), 5)
    assert isinstance(model, ResNet18APS)
    assert model.conv1.in_channels == 3 and model.conv1.out_channels == 8
    assert model.fc.out_features == 5
    with torch.device("meta"):
        assert n_params(build_model("resnet18_aps", {}, (1, 32, 32), 10)) == 11_172_810


def test_build_model_mlp():
    model = build_model("mlp", {"hidden": [16, 8]}, (1, 32, 32), 10)
    assert isinstance(model, MLP)
    assert n_params(model) == mlp_param_count(1024, [16, 8], 10)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_registry_is_a_plain_dict_of_factories():
    assert isinstance(ARCHITECTURES, dict)
    assert {"resnet18_aps", "mlp"} <= set(ARCHITECTURES)
    assert all(callable(f) for f in ARCHITECTURES.values())


@pytest.mark.parametrize(
    ("arch", "params", "shape", "pattern"),
    [
        ("resnet50", {}, (1, 32, 32), "resnet50"),
        ("resnet18_aps", {"depth": 18}, (1, 32, 32), "resnet18_aps.*'depth'"),
        ("resnet18_aps", {"width": 0}, (1, 32, 32), "resnet18_aps.*'width'"),
        ("resnet18_aps", {"width": 8.5}, (1, 32, 32), "resnet18_aps.*'width'"),
        ("resnet18_aps", {}, (1024,), "resnet18_aps.*input_shape"),
        ("mlp", {}, (1, 32, 32), "mlp.*'hidden'"),
        ("mlp", {"hidden": [8], "dropout": 0.5}, (1, 32, 32), "mlp.*'dropout'"),
        ("mlp", {"hidden": 2048}, (1, 32, 32), "mlp.*'hidden'"),
        ("mlp", {"hidden": [8, -1]}, (1, 32, 32), "mlp.*'hidden'"),
    ],
)
def test_build_model_rejects_bad_config(arch, params, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_model(arch, params, shape, 10)


def test_registry_accepts_new_factories(monkeypatch):
    def factory(input_shape, num_classes, *, depth, scale=1.0):
        return nn.Linear(math.prod(input_shape), num_classes)

    monkeypatch.setitem(ARCHITECTURES, "toy", factory)
    assert build_model("toy", {"depth": 2}, (4,), 3).out_features == 3
    with pytest.raises(ValueError, match="toy.*'depth'"):
        build_model("toy", {"scale": 2.0}, (4,), 3)
