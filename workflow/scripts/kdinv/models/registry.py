"""The configuration-driven model registry: :data:`ARCHITECTURES` and :func:`build_model` build a
model from a config entry ``{arch: ..., params: {...}}``, so experiment rows are data, not code.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

from torch import nn

from kdinv.models.deepsets import DeepSets
from kdinv.models.dgcnn import DGCNN
from kdinv.models.mlp import MLP
from kdinv.models.resnet import ResNet18APS


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
