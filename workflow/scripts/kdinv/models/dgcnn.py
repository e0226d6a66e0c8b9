"""DGCNN (Wang et al. 2019) on point clouds, with the translation-invariant edge function
h(x_j − x_i): the ModelNet40 teachers DGN and DGN'. Neighbours by pairwise distance and top-k in
plain PyTorch, chunked to bound memory."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_CHUNK_ELEMENTS = 2**26
"""Largest number of elements of a pairwise-distance block (and of a gathered edge block) that
:class:`DGCNN` materialises at once; larger batches are processed in chunks."""


def knn_indices(x: Tensor, k: int, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> Tensor:
    """Indices of the k nearest points of every point, itself included: (B, N, C) -> (B, N, k).

    Squared Euclidean distances ``|x_i|² + |x_j|² − 2 x_i·x_j`` are computed per cloud on features
    centred on the cloud's mean (the distances are unchanged, but their rounding error no longer
    grows with a common offset of the features). Each point's own distance is set to −inf, so it
    is always its first neighbour (``torch_cluster.knn(x, x, k)`` includes it at distance 0). When
    B·N·N exceeds ``chunk_elements`` the distances are computed for a few clouds, or a few query
    rows of one cloud, at a time; the indices do not depend on the chunking.
    No gradient flows through the indices. The distances are float32 even under bfloat16
    autocast (autocast is switched off here): bfloat16's 8-bit mantissa would reorder neighbours.
    """
    b, n, _ = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"kNN needs 1 <= k <= number of points, got k={k} for {n} points")
    # autocast off where the device has autocast at all (torch.autocast refuses other devices)
    no_autocast = (torch.autocast(x.device.type, enabled=False) if torch.amp.is_autocast_available(x.device.type)
                   else contextlib.nullcontext())
    with torch.no_grad(), no_autocast:
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
    winner per entry among tied neighbours). Forward mode (the Lie derivative
    of :mod:`kdinv.symmetry.measures`) takes each maximum's tangent from the same source point.
    The second output, the source points, is not differentiable.
    """

    @staticmethod
    def forward(x: Tensor, idx: Tensor, chunk_elements: int) -> tuple[Tensor, Tensor]:  # type: ignore
        b, n, c = x.shape
        clouds = max(1, chunk_elements // (n * idx.shape[2] * c))
        values, sources = [], []
        for b0 in range(0, b, clouds):
            i = idx[b0 : b0 + clouds]
            v, arg = _gather_neighbours(x[b0 : b0 + clouds], i).max(dim=2)  # (b', N, C) each
            values.append(v)
            sources.append(i.gather(2, arg))  # neighbour position -> point index, (b', N, C)
        return torch.cat(values, dim=0), torch.cat(sources, dim=0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, source = output
        ctx.mark_non_differentiable(source)
        ctx.save_for_backward(source)
        ctx.save_for_forward(source)

    @staticmethod
    def backward(ctx, grad: Tensor, _source_grad: Tensor | None = None):  # type: ignore[override]
        (source,) = ctx.saved_tensors
        grad_x = torch.zeros(source.shape, dtype=grad.dtype, device=grad.device)
        return grad_x.scatter_add_(1, source, grad), None, None

    @staticmethod
    def jvp(ctx, x_tangent: Tensor, _idx_tangent, _chunk_tangent):  # type: ignore[override]
        (source,) = ctx.saved_tensors
        return x_tangent.gather(1, source), None


def _gather_max(x: Tensor, idx: Tensor, chunk_elements: int) -> Tensor:
    """max over each point's neighbours j of x_j: (B, N, C), (B, N, k) -> (B, N, C), in chunks of
    clouds so that at most about ``chunk_elements`` gathered values exist at once."""
    return _GatherMax.apply(x, idx, chunk_elements)[0]


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
