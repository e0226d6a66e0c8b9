"""Shared fixtures: the repository root and the validated configs."""

from __future__ import annotations

import copy
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
