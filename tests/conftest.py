"""Shared fixtures: the repository root and the validated configs."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def deep_merge(base: dict, override: dict) -> dict:
    """Snakemake's --configfile semantics: dicts merge, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def benchmark_module(name: str):
    """benchmarks/<name>.py imported as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toy_image_folds(d: Path) -> Path:
    """A toy image split in ``d`` (3,000 12 x 12 images on a -1 background, two classes by mean
    brightness of the centre) and its two folds: data for the training and resume tests."""
    import torch

    from kdinv.data.splits import save_split, write_folds

    g = torch.Generator().manual_seed(0)
    x = torch.full((3000, 1, 12, 12), -1.0)
    x[:, :, 3:9, 3:9] = torch.rand(3000, 1, 6, 6, generator=g)
    y = (x[:, 0, 3:9, 3:9].mean((1, 2)) > 0.5).long()
    save_split(x, y, 2, d / "train.pt")
    write_folds(d / "train.pt", 2, 0, [d / "fold0.pt", d / "fold1.pt"])
    return d


def toy_sets(n: int, seed: int):
    """``n`` sets of 6 elements with 3 features (also points in 3-D); the class is whether the
    first features sum to a positive number (a permutation-invariant rule)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, 3, generator=g)
    return x, (x[:, :, 0].sum(1) > 0).long()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def paper_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.fixture
def demo_config(paper_config) -> dict:
    return deep_merge(paper_config, yaml.safe_load((ROOT / "config.demo.yaml").read_text()))


@pytest.fixture(scope="session")
def schema() -> dict:
    return yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def pytest_collection_modifyitems(config, items):
    """Run the SLURM tests last. Once SLURM's client tools are installed, Snakemake's SLURM
    executor plugin queries squeue and sacct whenever Snakemake starts; with the local cluster
    stopped (after its tests) each query waits for a timeout, about 10 s per Snakemake call."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is not None)
