"""Folds, split files, safe loading and the MNIST translation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from kdinv.data.splits import load_fold, load_split, save_split, stratified_folds, write_folds
from kdinv.io import load_tensors, save_tensors
from kdinv.symmetry.transforms import make_augmentation, make_transform, shift_2d


def digits(n=64, size=32, seed=0):
    """Background -1 images with a random 'digit' blob somewhere inside a 20x20 centre box."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 1, size, size), -1.0)
    for i in range(n):
        h, w = torch.randint(4, 16, (2,), generator=g).tolist()
        top, left = torch.randint(6, size - 6 - h + 1, (1,), generator=g).item(), torch.randint(
            6, size - 6 - w + 1, (1,), generator=g
        ).item()
        x[i, 0, top : top + h, left : left + w] = torch.rand(h, w, generator=g) * 1.5 - 0.5
    return x


def test_shift_is_a_lossless_axis_translation():
    x = digits()
    out = shift_2d(x, torch.Generator().manual_seed(1), max_shift=5)
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(-5, 6)
            for dx in range(-5, 6)
            if (dy == 0 or dx == 0) and torch.equal(torch.roll(x[i], (dy, dx), (1, 2)), out[i])
        ]
        assert matches, f"image {i} is not a roll of at most 5 px along one axis"
        # lossless: the same pixel values, only moved
        assert torch.equal(out[i].flatten().sort().values, x[i].flatten().sort().values)
    # the images really moved: with a blank margin of >= 6 px every shift is the full 5 px
    assert not torch.equal(out, x)
    moved = [(out[i] != x[i]).any().item() for i in range(len(x))]
    assert all(moved)


def test_shift_never_wraps_content_around():
    x = torch.full((4, 1, 28, 28), -1.0)
    x[:, :, 0:10, 10:15] = 1.0  # touches the top border: an upward shift has no room
    out = shift_2d(x, torch.Generator().manual_seed(0), max_shift=5)
    for i in range(4):
        rows = out[i, 0].ne(-1).any(1).nonzero().flatten()
        cols = out[i, 0].ne(-1).any(0).nonzero().flatten()
        assert rows.max() - rows.min() == 9 and cols.max() - cols.min() == 4  # still one block


def test_shift_directions_are_uniform_and_seeded():
    x = digits(400)
    a = shift_2d(x, torch.Generator().manual_seed(3))
    b = shift_2d(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    up = down = left = right = 0
    for i in range(len(x)):
        up += torch.equal(torch.roll(x[i], -5, 1), a[i])
        down += torch.equal(torch.roll(x[i], 5, 1), a[i])
        left += torch.equal(torch.roll(x[i], -5, 2), a[i])
        right += torch.equal(torch.roll(x[i], 5, 2), a[i])
    assert up + down + left + right == 400
    assert min(up, down, left, right) > 60


def test_augmentation_keeps_the_configured_share_unchanged():
    x = digits(2000)
    spec = {"transform": "shift_2d", "max_shift": 5, "background": -1.0, "augment_identity_prob": 0.25}
    out = make_augmentation(spec)(x, torch.Generator().manual_seed(0))
    unchanged = (out == x).flatten(1).all(1).float().mean().item()
    assert 0.21 < unchanged < 0.29
    plain = make_transform(spec)(x, torch.Generator().manual_seed(0))
    assert (plain == x).flatten(1).all(1).float().mean().item() == 0.0


@pytest.mark.slow
def test_folds_are_stratified_disjoint_and_deterministic():
    labels = np.repeat(np.arange(10), [50, 60, 70, 80, 90, 100, 110, 120, 130, 140])
    folds = stratified_folds(labels, 5, seed=7)
    vals = np.concatenate([val for _, val in folds])
    assert sorted(vals.tolist()) == list(range(len(labels)))  # each sample validates exactly once
    for train, val in folds:
        assert not set(train) & set(val)
        assert len(train) + len(val) == len(labels)
        counts = np.bincount(labels[val], minlength=10)
        np.testing.assert_allclose(counts, np.bincount(labels, minlength=10) / 5, atol=1)
    again = stratified_folds(labels, 5, seed=7)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = stratified_folds(labels, 5, seed=8)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def test_split_and_fold_files_round_trip(tmp_path):
    x, y = torch.randn(30, 1, 4, 4), torch.arange(30) % 3
    save_split(x, y, 3, tmp_path / "train.pt")
    x2, y2, k = load_split(tmp_path / "train.pt")
    assert torch.equal(x, x2) and torch.equal(y, y2) and k == 3
    outs = [tmp_path / f"fold{i}.pt" for i in range(3)]
    write_folds(tmp_path / "train.pt", 3, 0, outs)
    train, val = load_fold(outs[1], 30)
    assert len(train) == 20 and len(val) == 10
    with pytest.raises(ValueError, match="fold1.pt: fold indices do not fit"):
        load_fold(outs[1], 25)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left


def test_loading_refuses_a_pickled_callable(tmp_path):
    """A crafted file whose unpickling would run code is refused, and the code does not run."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "payload": Evil()}, path, pickle_module=pickle)
    with pytest.raises(ValueError, match="model.pt: cannot be loaded safely"):
        load_tensors(path)
    assert not marker.exists()


def test_missing_or_corrupt_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_tensors(tmp_path / "nothere.pt")
    save_tensors({"a": torch.zeros(1000)}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pt"):
        load_tensors(tmp_path / "cut.pt")
    save_tensors({"x": torch.zeros(3)}, tmp_path / "notsplit.pt")
    with pytest.raises(ValueError, match="notsplit.pt: not a split file"):
        load_split(tmp_path / "notsplit.pt")
