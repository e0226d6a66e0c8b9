"""ResNet18 with adaptive polyphase sampling (APS): the shift-invariant MNIST teacher.

Chaman & Dokmanic, "Truly shift-invariant convolutional neural networks", CVPR 2021;
re-implemented from ``achaman2/truly_shift_invariant_cnns`` as used by the authors of "Knowledge
Distillation for Teaching Symmetry Invariances".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def circular_pad(x: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    """``F.pad(x, pad, mode="circular")`` of a (B, C, H, W) map, pad = (left, right, top, bottom),
    each at most the map's side, by two concatenations.

    The same values as ``F.pad``, whose circular mode copies slices one by one (and autograd
    records each copy): on 2 CPU cores a training step of the demo's ResNet takes about a tenth
    less time with this one."""
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    if left or right:
        x = torch.cat([x[..., w - left :], x, x[..., :right]], dim=-1)
    if top or bottom:
        x = torch.cat([x[..., h - top :, :], x, x[..., :bottom, :]], dim=-2)
    return x


class CircularConv2d(nn.Conv2d):
    """``nn.Conv2d(..., padding_mode="circular")`` whose padding is :func:`circular_pad`: the same
    parameters, state dict and outputs, in less time."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "circular":
            return super()._conv_forward(input, weight, bias)
        return F.conv2d(
            circular_pad(input, self._reversed_padding_repeated_twice),
            weight, bias, self.stride, 0, self.dilation, self.groups,
        )


class APSDown(nn.Module):
    """Blur followed by adaptive polyphase downsampling by 2 (Chaman & Dokmanic 2021, Sec. 3).

    1. Anti-aliasing blur: circular pad (left 1, right 2, top 1, bottom 2 for the 4x4 filter) and a
       depthwise convolution with the normalised binomial filter ``outer([1,3,3,1], [1,3,3,1])/64``.
    2. If H or W is odd, one row / column is appended circularly so both are even.
    3. The map is split into its 4 polyphase components (row phase x column phase).
    4. Each sample keeps the component with the largest L2 norm over all channels and positions.

    Under a circular shift of the input the chosen component is the same set of values, circularly
    shifted, so downsampling is shift-equivariant (exactly when every map size is even).

    ``forward(x, index)`` returns ``(output, index)``; passing the index of another APS layer
    applied to a map of the same spatial size reuses its choice (the downsampling shortcut of a
    ResNet block).
    """

    def __init__(self, filter_size: int = 4) -> None:
        super().__init__()
        coeffs = torch.tensor(
            [math.comb(filter_size - 1, k) for k in range(filter_size)], dtype=torch.float32
        )
        filt = torch.outer(coeffs, coeffs)
        filt = filt / filt.sum()
        # (1, 1, f, f); expanded to (C, 1, f, f) at call time. A constant, so not in state_dict.
        self.register_buffer("filt", filt[None, None], persistent=False)
        lo, hi = (filter_size - 1) // 2, filter_size // 2
        self.blur_pad = (lo, hi, lo, hi)  # F.pad order: left, right, top, bottom

    def forward(self, x: Tensor, index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        if min(h, w) < max(self.blur_pad):
            raise ValueError(
                f"APS downsampling needs feature maps of at least {max(self.blur_pad)} px per "
                f"side, got {h}x{w}: the network input is too small"
            )
        x = F.conv2d(
            circular_pad(x, self.blur_pad), self.filt.expand(c, 1, -1, -1), groups=c
        )
        if h % 2 or w % 2:
            x = circular_pad(x, (0, w % 2, 0, h % 2))
            h, w = h + h % 2, w + w % 2
        # (B, C, H, W) -> (B, C, H/2, row phase, W/2, col phase)
        x = x.reshape(b, c, h // 2, 2, w // 2, 2)
        # -> (B, col phase, row phase, C, H/2, W/2) -> (B, 4, C, H/2, W/2); component k has
        # row phase k % 2 and column phase k // 2, the order of the reference implementation.
        poly = x.permute(0, 5, 3, 1, 2, 4).reshape(b, 4, c, h // 2, w // 2)
        if index is None:
            # (B, 4, C*H/2*W/2) -> (B, 4) norms -> (B,) index of the largest one
            norms = torch.linalg.vector_norm(poly.reshape(b, 4, -1), dim=2)
            index = norms.argmax(dim=1)
        batch = torch.arange(b, device=x.device)
        return poly[batch, index], index  # (B, C, H/2, W/2)


def _conv3x3(in_planes: int, out_planes: int) -> nn.Conv2d:
    """3x3 convolution, stride 1, circular padding 1, no bias."""
    return CircularConv2d(in_planes, out_planes, 3, padding=1, padding_mode="circular", bias=False)


class _BasicBlock(nn.Module):
    """ResNet BasicBlock with circular padding and APS downsampling (Chaman & Dokmanic 2021).

    With ``stride=2``: conv1 -> BN -> ReLU -> APS -> conv2 -> BN, and the shortcut is APS (reusing
    the main branch's polyphase index) -> 1x1 conv -> BN; the sum goes through a ReLU.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.conv1 = _conv3x3(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.down = APSDown() if stride == 2 else None
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.ModuleDict | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.ModuleDict(
                {
                    "conv": nn.Conv2d(in_planes, planes, 1, bias=False),
                    "bn": nn.BatchNorm2d(planes),
                }
            )
            if stride == 2:
                self.shortcut["down"] = APSDown()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        index = None
        if self.down is not None:
            out, index = self.down(out)
        out = self.bn2(self.conv2(out))
        identity = x
        if self.shortcut is not None:
            if "down" in self.shortcut:
                identity, _ = self.shortcut["down"](identity, index)
            identity = self.shortcut["bn"](self.shortcut["conv"](identity))
        return F.relu(out + identity)


class ResNet18APS(nn.Module):
    """ResNet18 made shift-invariant with adaptive polyphase sampling (Chaman & Dokmanic 2021).

    The MNIST teacher of "Knowledge Distillation for Teaching Symmetry Invariances", as built by the
    reference code's ``resnet18_mnist()`` (filter size 4, ``pool_only=False``, L2 criterion):

    * stem: circular-padded 3x3 conv (stride 1, no bias) -> BN -> ReLU;
    * "max-pool" block: APS down -> circular pad (right 1, bottom 1) + 2x2 max-pool, stride 1 ->
      APS down;
    * BasicBlocks [2, 2, 2, 2] of widths [w, 2w, 4w, 8w], the first block of layers 2-4 downsampling
      with APS;
    * head: global average pool -> linear.

    Every convolution is circular, every downsampling APS and the pooling global, so the logits are
    invariant to circular shifts of the input. The invariance is exact when every downsampled map
    has even size (input side divisible by 32); on 28x28 inputs the 7x7 maps are padded to 8x8 and
    it is only approximate. At ``width=64``, one input channel and 10 classes the model has
    11,172,810 parameters, as the reference.

    Initialisation as in the reference: Kaiming-normal (fan_out, relu) on the residual blocks'
    convolutions, BN weight 1 and bias 0; the stem conv and the linear head keep PyTorch's defaults
    (the reference replaces them after its init loop).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.conv1 = CircularConv2d(
            in_channels, width, 3, padding=1, padding_mode="circular", bias=False
        )
        self.bn1 = nn.BatchNorm2d(width)
        self.pool_down1 = APSDown()
        self.pool_down2 = APSDown()
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers = []
        in_planes = width
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [_BasicBlock(in_planes, planes, stride), _BasicBlock(planes, planes, 1)]
            layers.append(nn.Sequential(*blocks))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(widths[-1], num_classes)

        for layer in layers:
            for m in layer.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Map images (B, C, H, W) to logits (B, num_classes)."""
        x = F.relu(self.bn1(self.conv1(x)))  # (B, w, H, W)
        x, _ = self.pool_down1(x)  # (B, w, H/2, W/2)
        x = F.max_pool2d(circular_pad(x, (0, 1, 0, 1)), kernel_size=2, stride=1)
        x, _ = self.pool_down2(x)  # (B, w, H/4, W/4)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)  # (B, 8w, H/32, W/32), sizes rounded up
        return self.fc(x.mean(dim=(2, 3)))  # (B, 8w) -> (B, num_classes)
