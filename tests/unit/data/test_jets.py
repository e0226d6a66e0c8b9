"""Tests of kdinv.data.jets: the h5 checks, the preprocessing, the offline generator, the archives and
the download source.

Everything runs on small files written here; download tests use a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from http_server import FileServer

from kdinv.data import jets
from kdinv.data.download import ChecksumError, DataError
from kdinv.data.jets import (
    CLASSES,
    ETA_REL,
    FEATURE_NAMES,
    JET_FEATURE_NAMES,
    PHI_REL,
    PT,
    download_jets,
    extract_archives,
    list_h5_files,
    preprocess_jets,
    resolve_local_jets,
)
from kdinv.data.offline.jets import write_offline_jets

# --------------------------------------------------------------------------------------------
# Helpers: hand-written h5 files
# --------------------------------------------------------------------------------------------


def make_jet(pts, eta_rels=None, phi_rels=None, fill: float = 99.0) -> np.ndarray:
    """One jet (150, 16): constituent i has pT pts[i], eta_rel, phi_rel; other features ``fill``.

    The slots after the listed constituents are zero, as in the real files.
    """
    n = len(pts)
    jet = np.zeros((150, 16), dtype=np.float32)
    jet[:n] = fill
    jet[:n, PT] = pts
    jet[:n, ETA_REL] = np.arange(n) * 0.01 + 0.1 if eta_rels is None else eta_rels
    jet[:n, PHI_REL] = -np.arange(n) * 0.02 - 0.2 if phi_rels is None else phi_rels
    return jet


def jet_rows(labels, n_cols: int = 59) -> np.ndarray:
    rows = np.zeros((len(labels), n_cols), dtype=np.float32)
    rows[:, 1] = 1000.0  # j_pt, something non-zero outside the labels
    rows[np.arange(len(labels)), n_cols - 6 + np.asarray(labels)] = 1.0
    return rows


def write_h5(path: Path, const: np.ndarray, rows: np.ndarray, names: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh["jetConstituentList"] = const
        fh["jets"] = rows
        if names:
            fh["particleFeatureNames"] = np.array([n.encode() for n in FEATURE_NAMES])
            fh["jetFeatureNames"] = np.array([n.encode() for n in JET_FEATURE_NAMES])
    return path


def random_file(path: Path, n: int, seed: int) -> Path:
    """n random jets: scrambled pT in [0, 10), zero padding, every 5th jet empty, random labels."""
    rng = np.random.default_rng(seed)
    const = rng.normal(size=(n, 150, 16)).astype(np.float32)
    mult = rng.integers(0, 40, n)
    mult[::5] = 0  # jets without constituents (the 1-jet file has none left at all)
    const[:, :, PT] = rng.uniform(0, 10, (n, 150))
    const[np.arange(150)[None, :] >= mult[:, None]] = 0.0
    return write_h5(path, const, jet_rows(rng.integers(0, 5, n)))


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --------------------------------------------------------------------------------------------
# preprocess_jets on hand-checked files
# --------------------------------------------------------------------------------------------


def test_constants():
    assert len(FEATURE_NAMES) == 16 and len(JET_FEATURE_NAMES) == 59
    assert (FEATURE_NAMES[PT], FEATURE_NAMES[ETA_REL], FEATURE_NAMES[PHI_REL]) == (
        "j1_pt", "j1_etarel", "j1_phirel",
    )  # fmt: skip
    assert JET_FEATURE_NAMES[-6:] == ("j_g", "j_q", "j_w", "j_z", "j_t", "j_undef")
    assert CLASSES == ("g", "q", "w", "z", "t")


def test_preprocess_hand_checked(tmp_path):
    # Jet 0 (quark): scrambled, with pT exactly 2.0 (dropped), 2.0001 (kept) and 1.0 (dropped);
    # one padding slot holds junk eta/phi with pT 0 and must come out as zeros.
    a = make_jet(
        [3.0, 2.0, 10.0, 2.0001, 1.0, 5.0],
        eta_rels=[0.3, 0.2, 1.0, 0.25, 0.1, 0.5],
        phi_rels=[-0.3, -0.2, -1.0, -0.25, -0.1, -0.5],
    )
    a[6, ETA_REL], a[6, PHI_REL] = 7.0, 7.0
    # Jet 1 (gluon): nothing above 2 GeV: dropped together with its label.
    b = make_jet([2.0, 1.5, 0.5])
    # Jet 2 (top): 20 constituents stored in ascending pT: only the 16 highest, descending.
    pts = np.arange(3.0, 23.0)  # 3 .. 22
    c = make_jet(pts, eta_rels=pts / 100, phi_rels=-pts / 100)
    # Jet 3 (W): all 150 slots filled, stored in a scrambled order.
    pts_d = np.random.default_rng(1).permutation(np.arange(150) + 2.5)
    d = make_jet(pts_d, eta_rels=pts_d / 1000, phi_rels=pts_d / 500)
    path = write_h5(tmp_path / "f.h5", np.stack([a, b, c, d]), jet_rows([1, 0, 4, 2]))

    x, y = preprocess_jets([path])
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.shape == (3, 16, 3)
    assert y.tolist() == [1, 4, 2]

    want_a = np.zeros((16, 3), dtype=np.float32)
    want_a[:4] = [[10.0, 1.0, -1.0], [5.0, 0.5, -0.5], [3.0, 0.3, -0.3], [2.0001, 0.25, -0.25]]
    np.testing.assert_array_equal(x[0], want_a)

    top = np.arange(22.0, 6.0, -1.0)  # 22 .. 7
    np.testing.assert_allclose(
        x[1], np.stack([top, top / 100, -top / 100], axis=1).astype(np.float32)
    )

    top_d = np.arange(151.5, 135.5, -1.0)
    np.testing.assert_allclose(x[2, :, 0], top_d)
    np.testing.assert_allclose(x[2, :, 1], top_d / 1000, rtol=1e-6)
    np.testing.assert_allclose(x[2, :, 2], top_d / 500, rtol=1e-6)


def test_preprocess_other_arguments(tmp_path):
    path = write_h5(tmp_path / "f.h5", make_jet([5.0, 1.0, 3.0, 8.0])[None], jet_rows([3]))
    x, y = preprocess_jets([path], n_constituents=2, pt_min=0.5)
    np.testing.assert_allclose(x[0, :, 0], [8.0, 5.0])
    x, y = preprocess_jets([path], n_constituents=200, pt_min=4.0)
    assert x.shape == (1, 200, 3)
    np.testing.assert_allclose(x[0, :3, 0], [8.0, 5.0, 0.0])
    assert y.tolist() == [3]
    with pytest.raises(ValueError):
        preprocess_jets([path], chunk_size=0)
    with pytest.raises(ValueError):
        preprocess_jets([])


def test_ties_keep_the_stored_order(tmp_path):
    small = make_jet([4.0, 6.0, 4.0], eta_rels=[0.1, 0.2, 0.3], phi_rels=[0, 0, 0])
    pts = np.full(150, 5.0)
    pts[::7] = 3.0
    big = make_jet(pts, eta_rels=np.arange(150), phi_rels=np.zeros(150))
    path = write_h5(tmp_path / "f.h5", np.stack([small, big]), jet_rows([0, 1]))
    x, _ = preprocess_jets([path])
    np.testing.assert_allclose(x[0, :3, 1], [0.2, 0.1, 0.3])
    np.testing.assert_array_equal(x[1, :, 1], [i for i in range(150) if i % 7][:16])


def test_chunk_size_and_file_order(tmp_path):
    files = [random_file(tmp_path / f"r{i}.h5", n, seed=i) for i, n in enumerate([7, 1, 12])]
    x1, y1 = preprocess_jets(files, chunk_size=1)
    x3, y3 = preprocess_jets(files, chunk_size=3)
    xb, yb = preprocess_jets(files, chunk_size=1000)
    np.testing.assert_array_equal(x1, xb)
    np.testing.assert_array_equal(x3, xb)
    np.testing.assert_array_equal(y1, yb)
    np.testing.assert_array_equal(y3, yb)
    # files are concatenated in the given order
    parts = [preprocess_jets([f]) for f in files]
    np.testing.assert_array_equal(xb, np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(yb, np.concatenate([p[1] for p in parts]))
    assert len(parts[1][1]) == 0 and parts[1][0].shape == (0, 16, 3)
    assert len(yb) <= 20 - 4  # the empty jets are dropped
    assert np.all(np.diff(xb[:, :, 0], axis=1) <= 0)
    assert np.all((xb[:, :, 0] > 2.0) | np.all(xb == 0, axis=2))


# --------------------------------------------------------------------------------------------
# preprocess_jets on broken files
# --------------------------------------------------------------------------------------------


def test_truncated_file(tmp_path):
    path = random_file(tmp_path / "cut.h5", 20, seed=0)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.h5.*(truncated|HDF5)"):
        preprocess_jets([path])


def test_not_an_h5_file_and_missing_file(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"text\.h5"):
        preprocess_jets([path])
    with pytest.raises(DataError, match=r"absent\.h5: file not found"):
        preprocess_jets([tmp_path / "absent.h5"])


def test_wrong_shapes(tmp_path):
    bad = write_h5(tmp_path / "narrow.h5", np.zeros((3, 150, 15), np.float32), jet_rows([0, 1, 2]))
    with pytest.raises(DataError, match=r"narrow\.h5.*\(3, 150, 15\)"):
        preprocess_jets([bad])
    bad = write_h5(
        tmp_path / "cols.h5", np.zeros((3, 150, 16), np.float32), jet_rows([0, 1, 2], 58)
    )
    with pytest.raises(DataError, match=r"cols\.h5.*\(3, 58\)"):
        preprocess_jets([bad])
    bad = write_h5(
        tmp_path / "count.h5", np.zeros((3, 150, 16), np.float32), jet_rows([0, 1]), names=False
    )
    with pytest.raises(DataError, match=r"count\.h5.*3 jets.*2 rows"):
        preprocess_jets([bad])


def test_missing_dataset(tmp_path):
    path = tmp_path / "nojets.h5"
    with h5py.File(path, "w") as fh:
        fh["jetConstituentList"] = np.zeros((2, 150, 16), np.float32)
    with pytest.raises(DataError, match=r"nojets\.h5.*'jets'"):
        preprocess_jets([path])


def test_non_finite_and_not_one_hot(tmp_path):
    const = np.stack([make_jet([5.0, 3.0]), make_jet([4.0])])
    const[1, 0, ETA_REL] = np.nan
    path = write_h5(tmp_path / "nan.h5", const, jet_rows([0, 1]))
    with pytest.raises(DataError, match=r"nan\.h5: 1 jets .*non-finite"):
        preprocess_jets([path])

    rows = jet_rows([0, 1, 2])
    rows[1, -6:] = 0.0
    rows[1, -1] = 1.0  # a j_undef jet
    rows[2, -5] = 1.0  # two classes at once
    path = write_h5(tmp_path / "undef.h5", np.stack([make_jet([5.0])] * 3), rows)
    with pytest.raises(DataError, match=r"undef\.h5: 2 of 3 rows .*not one-hot.*\[1, 2\]"):
        preprocess_jets([path])


def test_feature_names_checked(tmp_path):
    path = write_h5(tmp_path / "names.h5", make_jet([5.0])[None], jet_rows([0]), names=False)
    with h5py.File(path, "a") as fh:
        names = [n.encode() for n in FEATURE_NAMES]
        names[PT], names[ETA_REL] = names[ETA_REL], names[PT]
        fh["particleFeatureNames"] = np.array(names)
    with pytest.raises(DataError, match=r"names\.h5: particleFeatureNames\[5\]"):
        preprocess_jets([path])


# --------------------------------------------------------------------------------------------
# The offline generator
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("offline") / "jets"
    write_offline_jets(dest, seed=3, files={"train": 2, "val": 1}, jets_per_file=600)
    return dest


def read_all(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as fh:
        return {key: fh[key][()] for key in fh}


def test_offline_layout(offline):
    assert tree(offline.parent) == {
        "jets", "jets/train", "jets/val",
        "jets/train/jetImage_0_150p_0_600.h5", "jets/train/jetImage_0_150p_600_1200.h5",
        "jets/val/jetImage_0_150p_0_600.h5",
    }  # fmt: skip
    files = list_h5_files(offline)
    assert [p.name for p in files["train"]] == [
        "jetImage_0_150p_0_600.h5", "jetImage_0_150p_600_1200.h5",
    ]  # fmt: skip
    data = read_all(files["train"][0])
    const, rows = data["jetConstituentList"], data["jets"]
    assert const.shape == (600, 150, 16) and const.dtype == np.float32
    assert rows.shape == (600, 59) and rows.dtype == np.float32
    assert [n.decode() for n in data["particleFeatureNames"]] == list(FEATURE_NAMES)
    assert [n.decode() for n in data["jetFeatureNames"]][-6:] == [
        "j_g", "j_q", "j_w", "j_z", "j_t", "j_undef",
    ]  # fmt: skip
    onehot = rows[:, -6:-1]
    assert np.all(onehot.sum(axis=1) == 1) and np.all(rows[:, -1] == 0)
    assert set(np.unique(onehot)) == {0.0, 1.0}
    counts = np.bincount(onehot.argmax(axis=1), minlength=5)
    assert counts.min() >= 110 and counts.max() <= 130  # near uniform


def test_offline_physics(offline):
    data = read_all(list_h5_files(offline)["train"][0])
    c, rows = data["jetConstituentList"].astype(np.float64), data["jets"]
    labels = rows[:, -6:-1].argmax(axis=1)
    pt = c[:, :, PT]
    valid = pt > 0
    mult = valid.sum(axis=1)
    # zero padding after the last constituent, stored pT-descending
    assert np.all(valid[:, :-1] | ~valid[:, 1:])
    assert np.all(c[~valid] == 0)
    assert np.all(np.diff(pt, axis=1) <= 0)
    # a falling spectrum: some constituents below the 2 GeV cut, most above
    below = (valid & (pt <= 2.0)).sum() / valid.sum()
    assert 0.05 < below < 0.5
    # class-dependent substructure
    mean_mult = [mult[labels == k].mean() for k in range(5)]
    assert mean_mult[0] > mean_mult[1] + 10  # gluons have more constituents than quarks
    dr = c[:, :, 13]
    width = [np.average(dr[labels == k], weights=pt[labels == k]) for k in range(5)]
    assert width[0] > width[1]  # gluon jets are wider
    mass = rows[:, JET_FEATURE_NAMES.index("j_mass")]
    med = [np.median(mass[labels == k]) for k in range(5)]
    assert med[2] < med[3] < med[4]  # W < Z < top
    assert np.all(rows[:, JET_FEATURE_NAMES.index("j_multiplicity")] == mult)
    # derived features consistent with (pT, eta, phi)
    eta, phi = c[:, :, 7], c[:, :, 10]
    v = valid
    np.testing.assert_allclose(c[:, :, 0][v], (pt * np.cos(phi))[v], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(c[:, :, 1][v], (pt * np.sin(phi))[v], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(c[:, :, 2][v], (pt * np.sinh(eta))[v], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(c[:, :, 3][v], (pt * np.cosh(eta))[v], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dr[v], np.hypot(c[:, :, 8], c[:, :, 11])[v], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c[:, :, 6].sum(axis=1), 1.0, atol=0.05)  # pT_rel sums to ~1
    assert np.all(np.abs(c[:, :, 11]) < 1.0) and np.all(c[:, :, 15][v] > 0.8)


def test_offline_deterministic(offline, tmp_path):
    again = tmp_path / "again"
    write_offline_jets(again, seed=3, files={"train": 2, "val": 1}, jets_per_file=600)
    other = tmp_path / "other"
    write_offline_jets(other, seed=4, files={"train": 1, "val": 1}, jets_per_file=600)
    for split in ("train", "val"):
        for p in (offline / split).iterdir():
            a, b = read_all(p), read_all(again / split / p.name)
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
    a = read_all(offline / "train" / "jetImage_0_150p_0_600.h5")["jetConstituentList"]
    b = read_all(other / "train" / "jetImage_0_150p_0_600.h5")["jetConstituentList"]
    assert not np.array_equal(a, b)
    train = read_all(offline / "train" / "jetImage_0_150p_0_600.h5")["jetConstituentList"]
    val = read_all(offline / "val" / "jetImage_0_150p_0_600.h5")["jetConstituentList"]
    assert not np.array_equal(train, val)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]  # no staging left


def test_offline_preprocessed(offline):
    files = list_h5_files(offline)
    x, y = preprocess_jets(files["train"], chunk_size=250)
    assert x.shape == (1200, 16, 3) and y.shape == (1200,)
    assert set(np.unique(y)) == set(range(5))
    labels = np.concatenate([read_all(p)["jets"][:, -6:-1].argmax(axis=1) for p in files["train"]])
    np.testing.assert_array_equal(y, labels)
    assert np.all(np.diff(x[:, :, 0], axis=1) <= 0)
    xt, _ = preprocess_jets(files["test"])
    assert xt.shape == (600, 16, 3)


def test_offline_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_offline_jets(tmp_path / "a", 0, files={"train": 0, "val": 1})
    with pytest.raises(ValueError):
        write_offline_jets(tmp_path / "a", 0, jets_per_file=0)
    assert not (tmp_path / "a").exists()


def test_cli(tmp_path):
    from kdinv.data.jets import _main

    assert _main(["write-offline", str(tmp_path / "d"), "--seed", "1", "--train-files", "2",
                  "--val-files", "1", "--jets-per-file", "30"]) == 0  # fmt: skip
    assert _main(["prepare", str(tmp_path / "d"), str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as npz:
        assert npz["x"].shape == (60, 16, 3) and npz["y"].shape == (60,)


# --------------------------------------------------------------------------------------------
# list_h5_files, extract_archives, resolve_local_jets
# --------------------------------------------------------------------------------------------


def test_list_h5_files(tmp_path):
    for name in ("b.h5", "a.h5", "notes.txt"):
        (tmp_path / "train").mkdir(exist_ok=True)
        (tmp_path / "train" / name).write_bytes(b"")
    with pytest.raises(DataError, match=r"val.*does not exist"):
        list_h5_files(tmp_path)
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match=r"val.*no \*\.h5"):
        list_h5_files(tmp_path)
    (tmp_path / "val" / "c.h5").write_bytes(b"")
    files = list_h5_files(tmp_path)
    assert [p.name for p in files["train"]] == ["a.h5", "b.h5"]
    assert [p.name for p in files["test"]] == ["c.h5"]


def make_tar(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    """A tar.gz with the given regular members (name -> bytes); returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path.read_bytes()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def archives(tmp_path, monkeypatch) -> dict[str, bytes]:
    """The two archives in tmp_path/arch, each with one tiny real h5 file; ARCHIVES patched."""
    h5 = {}
    for split, seed in (("train", 0), ("val", 1)):
        random_file(tmp_path / "h5src" / f"{split}.h5", 5, seed)
        h5[split] = (tmp_path / "h5src" / f"{split}.h5").read_bytes()
    train_dir = tarfile.TarInfo("train")
    train_dir.type = tarfile.DIRTYPE
    bodies = {
        "train.tar.gz": make_tar(
            tmp_path / "arch" / "train.tar.gz",
            {"train/a.h5": h5["train"], "train/README.txt": b"hello"},
            [train_dir],
        ),
        "val.tar.gz": make_tar(tmp_path / "arch" / "val.tar.gz", {"deep/er/val/b.h5": h5["val"]}),
    }
    monkeypatch.setattr(
        jets, "ARCHIVES",
        {
            "train": ("train.tar.gz", md5(bodies["train.tar.gz"]), len(bodies["train.tar.gz"])),
            "val": ("val.tar.gz", md5(bodies["val.tar.gz"]), None),
        },
    )  # fmt: skip
    return bodies


def test_extract_archives(archives, tmp_path):
    dest = tmp_path / "out" / "raw"
    (dest / "train").mkdir(parents=True)
    (dest / "train" / "stale.h5").write_bytes(b"old")  # replaced as a whole
    (dest / "keep.txt").write_text("untouched")
    assert extract_archives(tmp_path / "arch", dest) == dest
    assert tree(tmp_path / "out") == {
        "raw", "raw/keep.txt", "raw/train", "raw/train/a.h5", "raw/val", "raw/val/b.h5",
    }  # fmt: skip
    files = list_h5_files(dest)
    x, _ = preprocess_jets(files["train"])
    assert x.shape[1:] == (16, 3)
    # extracting next to the archives (dest == archive_dir) keeps them
    extract_archives(tmp_path / "arch", tmp_path / "arch")
    assert {"train.tar.gz", "val.tar.gz", "train/a.h5", "val/b.h5"} <= tree(tmp_path / "arch")


@pytest.mark.parametrize("evil", ["../evil.h5", "/abs/evil.h5", "train/../../evil.h5"])
def test_extract_refuses_unsafe_members(archives, tmp_path, evil):
    make_tar(tmp_path / "arch" / "val.tar.gz", {"val/b.h5": b"x", evil: b"evil"})
    dest = tmp_path / "out" / "raw"
    with pytest.raises(DataError, match=r"val\.tar\.gz: member .*evil\.h5"):
        extract_archives(tmp_path / "arch", dest)
    assert tree(tmp_path / "out") == set()  # nothing extracted, no staging left
    assert not (tmp_path / "evil.h5").exists() and not (tmp_path / "arch" / "evil.h5").exists()


def test_extract_refuses_links_and_reports_bad_archives(archives, tmp_path):
    link = tarfile.TarInfo("val/link.h5")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    make_tar(tmp_path / "arch" / "val.tar.gz", {"val/b.h5": b"x"}, [link])
    with pytest.raises(DataError, match=r"val\.tar\.gz: member 'val/link\.h5' is a link"):
        extract_archives(tmp_path / "arch", tmp_path / "out")
    make_tar(tmp_path / "arch" / "val.tar.gz", {"val/readme.txt": b"x"})
    with pytest.raises(DataError, match=r"val\.tar\.gz: holds no \*\.h5"):
        extract_archives(tmp_path / "arch", tmp_path / "out")
    (tmp_path / "arch" / "val.tar.gz").write_bytes(archives["val.tar.gz"][:40])
    with pytest.raises(DataError, match=r"val\.tar\.gz: not a valid tar\.gz"):
        extract_archives(tmp_path / "arch", tmp_path / "out")
    (tmp_path / "arch" / "val.tar.gz").unlink()
    with pytest.raises(DataError, match=r"val\.tar\.gz: missing"):
        extract_archives(tmp_path / "arch", tmp_path / "out")
    assert not (tmp_path / "out" / "train").exists()


def test_resolve_local_jets(archives, tmp_path):
    # archives: md5-checked and extracted into extract_to
    out = resolve_local_jets(tmp_path / "arch", tmp_path / "x")
    assert out == tmp_path / "x" and tree(out) == {"train", "train/a.h5", "val", "val/b.h5"}
    # extracted folders: read in place, extract_to untouched
    assert resolve_local_jets(out, tmp_path / "y") == out
    assert not (tmp_path / "y").exists()
    # a corrupt archive
    body = bytearray(archives["val.tar.gz"])
    body[-1] ^= 0xFF
    (tmp_path / "arch" / "val.tar.gz").write_bytes(bytes(body))
    with pytest.raises(ChecksumError, match=r"val\.tar\.gz: md5"):
        resolve_local_jets(tmp_path / "arch", tmp_path / "z")
    assert not (tmp_path / "z").exists()
    # neither layout
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty: holds neither.*train/, val/.*train\.tar\.gz"):
        resolve_local_jets(tmp_path / "empty", tmp_path / "z")


# --------------------------------------------------------------------------------------------
# download_jets against a local HTTP server
# --------------------------------------------------------------------------------------------


MIRROR = "/jets/"  # the URL path of the served folder


@pytest.fixture
def server(archives, monkeypatch):
    """The two archives served at /jets/<name> on 127.0.0.1."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with FileServer({MIRROR + name: body for name, body in archives.items()}) as srv:
        yield srv


def test_download_jets(server, tmp_path):
    dest = tmp_path / "dl"
    url = server.url + MIRROR
    assert download_jets(url, dest, retries=1, timeout_s=5) == dest
    assert tree(dest) == {
        "train.tar.gz", "val.tar.gz", "train", "train/a.h5", "val", "val/b.h5",
    }  # fmt: skip
    assert server.counts() == {MIRROR + "train.tar.gz": 1, MIRROR + "val.tar.gz": 1}
    x, y = preprocess_jets(list_h5_files(dest)["test"])
    assert len(x) == len(y) > 0
    # a rerun skips the verified archives; without a trailing slash; archives can be removed
    download_jets(url.rstrip("/"), dest, retries=1, timeout_s=5, keep_archives=False)
    assert server.counts() == {MIRROR + "train.tar.gz": 1, MIRROR + "val.tar.gz": 1}
    assert tree(dest) == {"train", "train/a.h5", "val", "val/b.h5"}


def test_download_jets_corrupt_mirror(server, tmp_path):
    server.corrupt_times[MIRROR + "val.tar.gz"] = -1
    dest = tmp_path / "dl"
    with pytest.raises(ChecksumError, match=r"val\.tar\.gz: md5"):
        download_jets(server.url + MIRROR, dest, retries=2, timeout_s=5, backoff_s=0)
    assert server.counts()[MIRROR + "val.tar.gz"] == 2
    assert not (dest / "val.tar.gz").exists() and not (dest / "train").exists()
    assert not (dest / "val").exists()
