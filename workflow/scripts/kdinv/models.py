"""Model architectures and the configuration-driven model registry.

* :class:`ResNet18APS`: ResNet18 with adaptive polyphase sampling (APS), the translation-invariant
  teacher of the MNIST row (Chaman & Dokmanic, "Truly shift-invariant convolutional neural
  networks", CVPR 2021; re-implemented from ``achaman2/truly_shift_invariant_cnns`` as used by the
  authors of "Knowledge Distillation for Teaching Symmetry Invariances").
* :class:`MLP`: the fully connected student.
* :data:`ARCHITECTURES` and :func:`build_model`: build a model from a config entry
  ``{arch: ..., params: {...}}``, so experiment rows are data, not code.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "APSDown",
    "ARCHITECTURES",
    "DGCNN",
    "DeepSets",
    "EdgeConv",
    "MLP",
    "PermEquivariant",
    "ResNet18APS",
    "build_model",
    "knn_indices",
]


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
            F.pad(x, self.blur_pad, mode="circular"), self.filt.expand(c, 1, -1, -1), groups=c
        )
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2), mode="circular")
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
    return nn.Conv2d(in_planes, out_planes, 3, padding=1, padding_mode="circular", bias=False)


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
        self.conv1 = nn.Conv2d(
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
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="circular"), kernel_size=2, stride=1)
        x, _ = self.pool_down2(x)  # (B, w, H/4, W/4)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)  # (B, 8w, H/32, W/32), sizes rounded up
        return self.fc(x.mean(dim=(2, 3)))  # (B, 8w) -> (B, num_classes)


class MLP(nn.Module):
    """Fully connected ReLU network, the student of the MNIST row.

    Flattens every input dimension after the batch, applies ``Linear + ReLU`` for each width in
    ``hidden`` and a final ``Linear`` to ``num_classes`` logits; PyTorch default initialisation.
    The paper's MNIST student is ``MLP(784 or 1024, [2048] * 5, 10)`` (the reference code's
    ``hidden_layers=4`` adds 4 layers after the first hidden one).
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.in_features = in_features
        layers: list[nn.Module] = []
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map inputs (B, ...) with ``in_features`` trailing elements to logits (B, num_classes)."""
        x = x.flatten(1)  # (B, ...) -> (B, in_features)
        if x.shape[1] != self.in_features:
            raise ValueError(f"MLP expects {self.in_features} input features, got {x.shape[1]}")
        return self.net(x)


# ---------------------------------------------------------------------------------------------
# Point-cloud and set models: DGCNN (the ModelNet teachers) and DeepSets (ModelNet students,
# jets teachers).

DEFAULT_CHUNK_ELEMENTS = 2**26
"""Largest number of elements of a pairwise-distance block (and of a gathered edge block) that
:class:`DGCNN` materialises at once; larger batches are processed in chunks."""


def knn_indices(x: Tensor, k: int, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> Tensor:
    """Indices of the k nearest points of every point, itself included: (B, N, C) -> (B, N, k).

    Squared Euclidean distances ``|x_i|² + |x_j|² − 2 x_i·x_j`` are computed per cloud on features
    centred on the cloud's mean (the distances are unchanged, but their rounding error no longer
    grows with a common offset of the features). Each point's own distance is set to −inf, so it
    is always its first neighbour (``torch_cluster.knn(x, x, k)`` includes it at distance 0). When B·N·N exceeds ``chunk_elements`` the distances are computed for a few
    clouds, or a few query rows of one cloud, at a time; the indices do not depend on the chunking.
    No gradient flows through the indices. The distances are float32 even under bfloat16
    autocast (autocast is switched off here): bfloat16's 8-bit mantissa would reorder neighbours.
    """
    b, n, _ = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"kNN needs 1 <= k <= number of points, got k={k} for {n} points")
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        x = x.detach().float()
        x = x - x.mean(dim=1, keepdim=True)
        sq = (x * x).sum(dim=2)  # (B, N)
        clouds = max(1, chunk_elements // (n * n))
        rows = n if n * n <= chunk_elements else max(1, chunk_elements // n)
        out = []
        for b0 in range(0, b, clouds):
            xb, sqb = x[b0 : b0 + clouds], sq[b0 : b0 + clouds]  # (b', N, C), (b', N)
            parts = []
            for r0 in range(0, n, rows):
                q = xb[:, r0 : r0 + rows]  # (b', r, C)
                dist = sqb[:, r0 : r0 + rows, None] + sqb[:, None, :] - 2 * (q @ xb.transpose(1, 2))
                dist.diagonal(offset=r0, dim1=1, dim2=2).fill_(float("-inf"))  # self first
                parts.append(dist.topk(k, dim=2, largest=False, sorted=True).indices)
            out.append(torch.cat(parts, dim=1))
        return torch.cat(out, dim=0)  # (B, N, k)


def _gather_neighbours(x: Tensor, idx: Tensor) -> Tensor:
    """Features of each point's neighbours: x (B, N, C), idx (B, N, k) -> (B, N, k, C)."""
    b, n, c = x.shape
    k = idx.shape[2]
    offset = (torch.arange(b, device=x.device) * n).view(b, 1, 1)
    flat = (idx + offset).reshape(-1)
    return x.reshape(b * n, c).index_select(0, flat).view(b, n, k, c)


class _GatherMax(torch.autograd.Function):
    """out[b, i, c] = max over j in idx[b, i] of x[b, j, c], with a lean backward.

    Autograd through ``gather → max(dim)`` would allocate a zero tensor of the gathered shape
    (B, N, k, C) and index-add it back; here the backward scatter-adds the output gradient straight
    onto the source point of each maximum (the routing of ``max(dim)``, whose argmax picks the one
    winner per entry among tied neighbours).
    """

    @staticmethod
    def forward(ctx, x: Tensor, idx: Tensor, chunk_elements: int) -> Tensor:  # type: ignore
        b, n, c = x.shape
        clouds = max(1, chunk_elements // (n * idx.shape[2] * c))
        values, sources = [], []
        for b0 in range(0, b, clouds):
            i = idx[b0 : b0 + clouds]
            v, arg = _gather_neighbours(x[b0 : b0 + clouds], i).max(dim=2)  # (b', N, C) each
            values.append(v)
            sources.append(i.gather(2, arg))  # neighbour position -> point index, (b', N, C)
        ctx.save_for_backward(torch.cat(sources, dim=0))
        return torch.cat(values, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (source,) = ctx.saved_tensors
        grad_x = torch.zeros(source.shape, dtype=grad.dtype, device=grad.device)
        return grad_x.scatter_add_(1, source, grad), None, None


def _gather_max(x: Tensor, idx: Tensor, chunk_elements: int) -> Tensor:
    """max over each point's neighbours j of x_j: (B, N, C), (B, N, k) -> (B, N, C), in chunks of
    clouds so that at most about ``chunk_elements`` gathered values exist at once."""
    return _GatherMax.apply(x, idx, chunk_elements)


class EdgeConv(nn.Module):
    """Edge convolution with the translation-invariant edge function (Wang et al. 2019, as patched
    by the authors): ``x'_i = max_{j ∈ kNN(i)} h(x_j − x_i)``.

    ``h`` is an MLP with output widths ``widths``, as PyG's ``MLP([c_in, *widths])`` with
    ``norm="batch_norm"``, ``plain_last=True``: ``Linear → BatchNorm → LeakyReLU(slope)`` between
    layers and a plain last ``Linear``. The BatchNorm normalises over all B·N·k edges. With a
    single layer ``h`` is affine, and (when ``affine_shortcut``) the layer computes
    ``max_j (W x_j) − W x_i + b``, which equals ``max_j W(x_j − x_i) + b`` without materialising
    the edge inputs.
    """

    def __init__(self, in_features: int, widths: Sequence[int], slope: float = 0.01) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_features
        for i, w in enumerate(widths):
            layers.append(nn.Linear(prev, w))
            if i < len(widths) - 1:
                layers += [nn.BatchNorm1d(w), nn.LeakyReLU(slope)]
            prev = w
        self.mlp = nn.Sequential(*layers)
        self.out_features = prev
        self.affine_shortcut = True

    def forward(
        self, x: Tensor, idx: Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
    ) -> Tensor:
        """Map point features x (B, N, C) and neighbour indices idx (B, N, k) to (B, N, C')."""
        if len(self.mlp) == 1 and self.affine_shortcut:
            lin = self.mlp[0]
            wx = F.linear(x, lin.weight)  # (B, N, C')
            return _gather_max(wx, idx, chunk_elements) - wx + lin.bias
        b, n, c = x.shape
        k = idx.shape[2]
        edges = _gather_neighbours(x, idx) - x[:, :, None, :]  # (B, N, k, C): x_j − x_i
        h = self.mlp(edges.reshape(b * n * k, c))  # BN over all B·N·k edges
        return h.view(b, n, k, -1).max(dim=2).values


def _activation(name: str, slope: float = 0.2) -> nn.Module:
    return nn.LeakyReLU(slope) if name == "leaky_relu" else nn.ReLU()


class DGCNN(nn.Module):
    """Dynamic graph CNN (Wang et al. 2019) with the translation-invariant edge function
    h(x_j − x_i): the ModelNet teachers of "Knowledge Distillation for Teaching Symmetry
    Invariances".

    * ``len(edge_layers)`` dynamic edge convolutions (:class:`EdgeConv`); each rebuilds the kNN
      graph (k nearest, itself included) in its input feature space and max-aggregates over
      neighbours.
    * The outputs of all edge convolutions are concatenated and embedded per point:
      ``Linear(Σ widths, embedding)``, followed by ``BatchNorm → LeakyReLU(0.2)`` when
      ``embedding_norm``.
    * Global max pool over points, then the head: for each width of ``head``,
      ``Linear → [BatchNorm] → activation → Dropout(dropout)``, and a final ``Linear`` to the logits
      (PyG's MLP with ``plain_last``).

    Every input of the network is a coordinate difference and the kNN uses distances, so the
    logits are invariant to translations of a cloud and, through the global pool, to permutations
    of its points. Exactly so in float64 (IM ~1e-15); in float32 only up to kNN near-ties: the
    rounding of x + t (~6e-8) can swap a point's k-th and (k+1)-th neighbours in a deep feature
    space, and the swap propagates through the later layers. With BN-calibrated random weights
    this gave translation IMs from ~1e-6 to ~4e-4 on pairs of clouds (DGN; DGN' ~1e-8).
    Under permutations of the points the float32 logits were bitwise unchanged in those runs. The
    defaults are the paper's DGN
    (``DGCNNPaper``, 1,241,064 parameters for 3-d points and 40 classes); the "alt" teacher DGN'
    (520,232) is ``edge_layers=[[64, 64, 64], [128]], embedding=512, embedding_norm=False,
    head_norm=False, head_activation="relu"``.

    ``chunk_elements`` bounds the pairwise-distance and gathered-edge blocks held at once.
    """

    def __init__(
        self,
        in_features: int = 3,
        num_classes: int = 40,
        *,
        k: int = 20,
        edge_layers: Sequence[Sequence[int]] = ((64,), (64,), (128,), (256,)),
        edge_slope: float = 0.01,
        embedding: int = 1024,
        embedding_norm: bool = True,
        head: Sequence[int] = (512, 256),
        head_norm: bool = True,
        head_activation: str = "leaky_relu",
        dropout: float = 0.5,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ) -> None:
        super().__init__()
        if head_activation not in ("leaky_relu", "relu"):
            raise ValueError(
                f"head_activation must be 'leaky_relu' or 'relu', got {head_activation!r}"
            )
        self.k = k
        self.chunk_elements = chunk_elements
        convs = []
        prev = in_features
        for widths in edge_layers:
            convs.append(EdgeConv(prev, widths, edge_slope))
            prev = convs[-1].out_features
        self.convs = nn.ModuleList(convs)
        concat = sum(conv.out_features for conv in convs)
        embed: list[nn.Module] = [nn.Linear(concat, embedding)]
        if embedding_norm:
            embed += [nn.BatchNorm1d(embedding), nn.LeakyReLU(0.2)]
        self.embed = nn.Sequential(*embed)
        layers: list[nn.Module] = []
        prev = embedding
        for w in head:
            layers.append(nn.Linear(prev, w))
            if head_norm:
                layers.append(nn.BatchNorm1d(w))
            layers += [_activation(head_activation), nn.Dropout(dropout)]
            prev = w
        layers.append(nn.Linear(prev, num_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map point clouds (B, N, C) to logits (B, num_classes)."""
        if x.ndim != 3:
            raise ValueError(f"DGCNN expects point clouds (B, N, C), got {tuple(x.shape)}")
        b, n, _ = x.shape
        h = x
        features = []
        for conv in self.convs:
            idx = knn_indices(h, self.k, self.chunk_elements)  # (B, N, k)
            h = conv(h, idx, self.chunk_elements)  # (B, N, C_l)
            features.append(h)
        h = torch.cat(features, dim=2)  # (B, N, Σ C_l)
        h = self.embed(h.reshape(b * n, -1)).view(b, n, -1)  # BN over all B·N points
        return self.head(h.max(dim=1).values)  # (B, embedding) -> (B, num_classes)


class PermEquivariant(nn.Module):
    """Permutation-equivariant set layer X ↦ Γ(X) − Λ(mean over the set of X) (Zaheer et al. 2017):
    Γ a Linear with bias applied per element, Λ a Linear without bias; (B, S, F) -> (B, S, F')."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.gamma = nn.Linear(in_features, out_features)
        self.lam = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.gamma(x) - self.lam(x.mean(dim=1, keepdim=True))


class DeepSets(nn.Module):
    """DeepSets (Zaheer et al. 2017): ρ(pool_s φ(x_s)), invariant to permutations of the set.

    * φ: for each width of ``phi``, a ``Linear`` applied per element (or, when ``equivariant``, a
      :class:`PermEquivariant` layer), followed by the activation.
    * pool: mean or max over the set (dim 1), padding slots included.
    * ρ: for each width of ``rho``, ``[Dropout] → Linear → activation``, then ``[Dropout] → Linear``
      to the logits; the Dropout layers exist only when ``dropout`` is not None (the authors'
      ModelNet DeepSets).

    The authors' ModelNet students: ``phi=[256]*3, rho=[256], activation="tanh", pool="max",
    dropout=0.5`` (208,680 parameters, 340,520 equivariant); their jets teacher: ``phi=[32]*3,
    rho=[32]``, ReLU, mean, no dropout (3,461).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        phi: Sequence[int],
        rho: Sequence[int],
        *,
        activation: str = "relu",
        pool: str = "mean",
        dropout: float | None = None,
        equivariant: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
        if pool not in ("mean", "max"):
            raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
        act = nn.ReLU if activation == "relu" else nn.Tanh
        self.pool = pool
        layers: list[nn.Module] = []
        prev = in_features
        for w in phi:
            layers += [PermEquivariant(prev, w) if equivariant else nn.Linear(prev, w), act()]
            prev = w
        self.phi = nn.Sequential(*layers)
        layers = []
        for w in [*rho, num_classes]:
            if dropout is not None:
                layers.append(nn.Dropout(dropout))
            layers += [nn.Linear(prev, w), act()]
            prev = w
        self.rho = nn.Sequential(*layers[:-1])  # no activation after the last Linear

    def forward(self, x: Tensor) -> Tensor:
        """Map sets (B, S, F) to logits (B, num_classes)."""
        if x.ndim != 3:
            raise ValueError(f"DeepSets expects sets (B, S, F), got {tuple(x.shape)}")
        h = self.phi(x)  # (B, S, phi[-1])
        h = h.mean(dim=1) if self.pool == "mean" else h.max(dim=1).values
        return self.rho(h)


def _positive_int(arch: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{arch}: param {key!r} must be a positive integer, got {value!r}")
    return value


def _build_resnet18_aps(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 64
) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"resnet18_aps: input_shape must be (C, H, W), got {tuple(input_shape)}")
    return ResNet18APS(
        in_channels=input_shape[0],
        num_classes=num_classes,
        width=_positive_int("resnet18_aps", "width", width),
    )


def _build_mlp(input_shape: tuple[int, ...], num_classes: int, *, hidden: list[int]) -> nn.Module:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ValueError(f"mlp: param 'hidden' must be a list of positive integers, got {hidden!r}")
    widths = [_positive_int("mlp", "hidden", h) for h in hidden]
    return MLP(math.prod(input_shape), widths, num_classes)


def _int_list(arch: str, key: str, value: object, allow_empty: bool = True) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(
            f"{arch}: param {key!r} must be a list of positive integers, got {value!r}"
        )
    if not value and not allow_empty:
        raise ValueError(f"{arch}: param {key!r} must not be empty")
    return [_positive_int(arch, key, v) for v in value]


def _choice(arch: str, key: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{arch}: param {key!r} must be one of {list(allowed)}, got {value!r}")
    return value  # type: ignore[return-value]


def _flag(arch: str, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{arch}: param {key!r} must be true or false, got {value!r}")
    return value


def _fraction(arch: str, key: str, value: object, low: float, high: float) -> float:
    """A number in [low, high)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < high:
        raise ValueError(
            f"{arch}: param {key!r} must be a number in [{low}, {high}), got {value!r}"
        )
    return float(value)


def _set_shape(arch: str, input_shape: tuple[int, ...], what: str) -> tuple[int, int]:
    if len(input_shape) != 2 or min(input_shape) < 1:
        raise ValueError(
            f"{arch}: input_shape must be ({what}, features), got {tuple(input_shape)}"
        )
    return input_shape[0], input_shape[1]


def _build_dgcnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    k: int = 20,
    edge_layers: list[list[int]] = ([64], [64], [128], [256]),  # type: ignore[assignment]
    edge_slope: float = 0.01,
    embedding: int = 1024,
    embedding_norm: bool = True,
    head: list[int] = (512, 256),  # type: ignore[assignment]
    head_norm: bool = True,
    head_activation: str = "leaky_relu",
    dropout: float = 0.5,
) -> nn.Module:
    arch = "dgcnn"
    points, features = _set_shape(arch, input_shape, "points")
    k = _positive_int(arch, "k", k)
    if k > points:
        raise ValueError(f"{arch}: param 'k' = {k} exceeds the {points} points per cloud")
    if (
        isinstance(edge_layers, (str, bytes))
        or not isinstance(edge_layers, Sequence)
        or not edge_layers
    ):
        raise ValueError(
            f"{arch}: param 'edge_layers' must be a non-empty list of lists of widths, "
            f"got {edge_layers!r}"
        )
    layers = [_int_list(arch, "edge_layers", widths, allow_empty=False) for widths in edge_layers]
    return DGCNN(
        features,
        num_classes,
        k=k,
        edge_layers=layers,
        edge_slope=_fraction(arch, "edge_slope", edge_slope, 0.0, math.inf),
        embedding=_positive_int(arch, "embedding", embedding),
        embedding_norm=_flag(arch, "embedding_norm", embedding_norm),
        head=_int_list(arch, "head", head),
        head_norm=_flag(arch, "head_norm", head_norm),
        head_activation=_choice(arch, "head_activation", head_activation, ("leaky_relu", "relu")),
        dropout=_fraction(arch, "dropout", dropout, 0.0, 1.0),
    )


def _build_deepsets(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    phi: list[int],
    rho: list[int],
    activation: str = "relu",
    pool: str = "mean",
    dropout: float | None = None,
    equivariant: bool = False,
) -> nn.Module:
    arch = "deepsets"
    _, features = _set_shape(arch, input_shape, "set size")
    return DeepSets(
        features,
        num_classes,
        _int_list(arch, "phi", phi, allow_empty=False),
        _int_list(arch, "rho", rho),
        activation=_choice(arch, "activation", activation, ("relu", "tanh")),
        pool=_choice(arch, "pool", pool, ("mean", "max")),
        dropout=None if dropout is None else _fraction(arch, "dropout", dropout, 0.0, 1.0),
        equivariant=_flag(arch, "equivariant", equivariant),
    )


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18_aps": _build_resnet18_aps,
    "mlp": _build_mlp,
    "dgcnn": _build_dgcnn,
    "deepsets": _build_deepsets,
}
"""Model factories by architecture name.

A factory is called as ``factory(input_shape, num_classes, **params)``; its keyword-only
parameters are the keys a config's ``params`` may (with a default) or must (without) contain.
"""


def build_model(
    arch: str, params: dict, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Build a model from a config entry.

    Args:
        arch: a key of :data:`ARCHITECTURES`, e.g. ``"resnet18_aps"`` or ``"mlp"``.
        params: architecture parameters, e.g. ``{"width": 64}`` or ``{"hidden": [2048] * 5}``.
        input_shape: the per-sample input shape, e.g. ``(1, 32, 32)``.
        num_classes: number of output logits.

    Raises:
        ValueError: unknown ``arch``, unknown or missing keys in ``params``, or invalid values;
            the message names the architecture and the offending key.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHITECTURES)}")
    factory = ARCHITECTURES[arch]
    params = dict(params or {})
    signature = inspect.signature(factory).parameters.values()
    keyword = {p.name: p for p in signature if p.kind is inspect.Parameter.KEYWORD_ONLY}
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature)
    for key in params:
        if key not in keyword and not accepts_any:
            raise ValueError(f"{arch}: unknown param {key!r}; allowed: {sorted(keyword)}")
    for name, p in keyword.items():
        if p.default is inspect.Parameter.empty and name not in params:
            raise ValueError(f"{arch}: missing required param {name!r}")
    return factory(tuple(input_shape), num_classes, **params)
