"""Tests of kdinv.data.mnist: IDX reading, the three MNIST sources and the preprocessing.

Real-data tests read the folder named by the environment variable ``KDINV_MNIST_DIR`` (the shared
real-MNIST sample: the test split and the training labels, no training images) and are skipped
when it is unset. Download tests run against a local HTTP server on 127.0.0.1 only.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from http_server import FileServer

from kdinv.data import mnist
from kdinv.data.mnist import (
    MNIST_FILES,
    ChecksumError,
    DataError,
    copy_local_mnist,
    download_mnist,
    find_raw_file,
    preprocess_mnist,
    read_idx,
    write_idx,
)
from kdinv.data.offline.mnist import write_offline_mnist

TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
REAL_FILES = [
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
]


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def tiny_mnist(n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Four tiny arrays with the official names: random 28x28 uint8 images, labels 0..9."""
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_tiny(folder: Path, arrays: dict[str, np.ndarray], compressed: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / (name if compressed else name[:-3]), array)


def tree(folder: Path) -> set[str]:
    """Every path below ``folder`` (relative), hidden ones included."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --------------------------------------------------------------------------------------------
# The md5 table
# --------------------------------------------------------------------------------------------


def test_md5_table_equals_torchvision():
    from torchvision.datasets import MNIST

    assert MNIST_FILES == dict(MNIST.resources)
    assert list(MNIST_FILES) == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


# --------------------------------------------------------------------------------------------
# Real MNIST files
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_dir() -> Path:
    value = os.environ.get("KDINV_MNIST_DIR")
    if not value:
        pytest.skip(
            "KDINV_MNIST_DIR is not set: point it at a folder with the real "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz and train-labels-idx1-ubyte.gz"
        )
    folder = Path(value)
    missing = [name for name in REAL_FILES if not (folder / name).is_file()]
    if missing:
        pytest.fail(f"KDINV_MNIST_DIR={folder} lacks {', '.join(missing)}")
    return folder


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_md5(real_dir, name):
    assert mnist.md5sum(real_dir / name) == MNIST_FILES[name]


def test_real_test_split(real_dir):
    images = read_idx(real_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(real_dir / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255
    assert np.bincount(labels, minlength=10).tolist() == TEST_LABEL_COUNTS
    assert labels[:10].tolist() == FIRST_TEST_LABELS
    assert images.flags.writeable  # a normal array, not a read-only view of the file's bytes


def test_real_train_labels(real_dir):
    labels = read_idx(real_dir / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == TRAIN_LABEL_COUNTS


def test_real_files_match_torchvision_reader(real_dir, tmp_path):
    """torchvision's reader is independent of ours and reads uncompressed files only."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    for name in REAL_FILES:
        raw = tmp_path / name[:-3]
        raw.write_bytes(gzip.decompress((real_dir / name).read_bytes()))
        ours_gz = read_idx(real_dir / name)
        ours_raw = read_idx(raw)
        theirs = (read_image_file if "images" in name else read_label_file)(str(raw)).numpy()
        np.testing.assert_array_equal(ours_gz, theirs)
        np.testing.assert_array_equal(ours_raw, theirs)


def test_real_gzip_detected_by_magic(real_dir, tmp_path):
    renamed = tmp_path / "labels.idx"  # gzip content without the .gz suffix
    shutil.copyfile(real_dir / "t10k-labels-idx1-ubyte.gz", renamed)
    assert read_idx(renamed)[:10].tolist() == FIRST_TEST_LABELS


def test_real_copy_local_verifies(real_dir, tmp_path, monkeypatch):
    """The 3 real files pass copy_local_mnist's md5 check; the train images are a stand-in."""
    src = tmp_path / "src"
    src.mkdir()
    for name in REAL_FILES:
        shutil.copyfile(real_dir / name, src / name)
    stand_in = src / "train-images-idx3-ubyte.gz"
    write_idx(stand_in, np.zeros((60000, 1, 1), np.uint8))
    with pytest.raises(ChecksumError, match="train-images-idx3-ubyte.gz"):
        copy_local_mnist(src, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    table = dict(MNIST_FILES, **{stand_in.name: mnist.md5sum(stand_in)})
    monkeypatch.setattr(mnist, "MNIST_FILES", table)
    copy_local_mnist(src, tmp_path / "dest")
    for name in REAL_FILES:
        assert mnist.md5sum(tmp_path / "dest" / name) == MNIST_FILES[name]


# --------------------------------------------------------------------------------------------
# read_idx / write_idx / find_raw_file
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    arrays = tiny_mnist()
    for name, array in arrays.items():
        path = tmp_path / (name[:-3] + suffix)
        write_idx(path, array)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
        np.testing.assert_array_equal(read_idx(path), array)


def test_idx_header_layout(tmp_path):
    path = tmp_path / "x-images"
    write_idx(path, np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))
    data = path.read_bytes()
    assert struct.unpack(">IIII", data[:16]) == (2051, 2, 3, 4)
    assert data[16:] == bytes(range(24))
    write_idx(path, np.array([1, 2], np.uint8))
    assert path.read_bytes() == struct.pack(">II", 2049, 2) + b"\x01\x02"


def test_write_idx_is_deterministic(tmp_path):
    array = tiny_mnist()["t10k-images-idx3-ubyte.gz"]
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_read_idx_truncated(tmp_path, compressed):
    payload = struct.pack(">IIII", 2051, 3, 28, 28) + bytes(3 * 28 * 28 - 5)
    path = tmp_path / ("cut-images.gz" if compressed else "cut-images")
    path.write_bytes(gzip.compress(payload) if compressed else payload)
    with pytest.raises(DataError, match=r"cut-images.*truncated.*2352 bytes.*2347"):
        read_idx(path)


def test_read_idx_extra_bytes(tmp_path):
    path = tmp_path / "long-labels"
    path.write_bytes(struct.pack(">II", 2049, 3) + bytes(4))
    with pytest.raises(DataError, match=r"long-labels.*extra bytes.*3 bytes.*has 4"):
        read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">II", 2049, 100) + bytes(100))[:-12])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz.*gzip"):
        read_idx(path)


@pytest.mark.parametrize("magic", [0x00000802, 0x00000903, 0x08030000, 0x00000D01])
def test_read_idx_wrong_magic(tmp_path, magic):
    path = tmp_path / "odd-file"
    path.write_bytes(struct.pack(">II", magic, 1) + b"\x00" * 8)
    with pytest.raises(DataError, match=rf"odd-file.*0x{magic:08x}"):
        read_idx(path)


def test_read_idx_missing_and_tiny(tmp_path):
    with pytest.raises(DataError, match="nothing-here"):
        read_idx(tmp_path / "nothing-here")
    (tmp_path / "short").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="short: 2 bytes"):
        read_idx(tmp_path / "short")
    (tmp_path / "short-header").write_bytes(struct.pack(">II", 2051, 5))
    with pytest.raises(DataError, match="short-header: truncated header, expected 16"):
        read_idx(tmp_path / "short-header")


def test_write_idx_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError):
        write_idx(tmp_path / "x", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))


def test_find_raw_file(tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(DataError, match=rf"{name}.*t10k-labels-idx1-ubyte .*{tmp_path}"):
        find_raw_file(tmp_path, name)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"")
    assert find_raw_file(tmp_path, name) == tmp_path / "t10k-labels-idx1-ubyte"
    (tmp_path / name).write_bytes(b"")
    assert find_raw_file(tmp_path, name) == tmp_path / name
    assert find_raw_file(tmp_path, "t10k-labels-idx1-ubyte") == tmp_path / name


# --------------------------------------------------------------------------------------------
# download_mnist against a local HTTP server
# --------------------------------------------------------------------------------------------


MIRROR = "/mnist/"  # the URL path of the served folder


@pytest.fixture
def server(monkeypatch, tmp_path):
    """A server with four tiny valid IDX .gz files at /mnist/<name>; MNIST_FILES is patched to
    their md5s."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    write_tiny(tmp_path / "served", tiny_mnist())
    files = {MIRROR + name: (tmp_path / "served" / name).read_bytes() for name in MNIST_FILES}
    monkeypatch.setattr(mnist, "MNIST_FILES", {n: md5_bytes(files[MIRROR + n]) for n in MNIST_FILES})
    with FileServer(files) as srv:
        yield srv


def test_download_success(server, tmp_path):
    dest = tmp_path / "out" / "raw"
    url = server.url + MIRROR
    download_mnist(url, dest, retries=2, backoff_s=0, timeout_s=5)
    assert sorted(p.name for p in dest.iterdir()) == sorted(MNIST_FILES)
    for name in MNIST_FILES:
        assert (dest / name).read_bytes() == server.files[MIRROR + name]
    assert server.counts() == {MIRROR + name: 1 for name in MNIST_FILES}
    assert tree(tmp_path / "out") == {"raw"} | {f"raw/{n}" for n in MNIST_FILES}
    # without a trailing slash, and over existing files
    download_mnist(url.rstrip("/"), dest, retries=1, backoff_s=0, timeout_s=5)
    arrays = preprocess_mnist(dest)
    assert arrays["train_x"].shape == (6, 1, 32, 32)


def test_download_recovers_after_a_corrupt_attempt(server, tmp_path):
    name = "t10k-images-idx3-ubyte.gz"
    server.corrupt_times[MIRROR + name] = 2
    dest = tmp_path / "out" / "raw"
    download_mnist(server.url + MIRROR, dest, retries=3, backoff_s=0, timeout_s=5)
    assert server.counts()[MIRROR + name] == 3
    assert md5_bytes((dest / name).read_bytes()) == md5_bytes(server.files[MIRROR + name])


def test_download_corrupt_file_fails_cleanly(server, tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    server.corrupt_times[MIRROR + name] = -1
    expected = mnist.MNIST_FILES[name]
    body = server.files[MIRROR + name]
    actual = md5_bytes(body[:-1] + bytes([body[-1] ^ 0xFF]))
    parent = tmp_path / "out"
    parent.mkdir()
    (parent / "keep.txt").write_text("unrelated")
    dest = parent / "raw"
    with pytest.raises(ChecksumError) as info:
        download_mnist(server.url + MIRROR, dest, retries=3, backoff_s=0, timeout_s=5)
    message = str(info.value)
    assert name in message and actual in message and expected in message
    assert server.url + MIRROR + name in message
    assert isinstance(info.value, DataError)
    assert server.counts()[MIRROR + name] == 3  # retried up to `retries` attempts
    assert tree(parent) == {"keep.txt"}  # no dest_dir, no temporary folder, no partial files


def test_download_404_names_the_url(server, tmp_path):
    name = "train-labels-idx1-ubyte.gz"
    del server.files[MIRROR + name]
    dest = tmp_path / "out" / "raw"
    with pytest.raises(DataError) as info:
        download_mnist(server.url + MIRROR, dest, retries=3, backoff_s=0, timeout_s=5)
    message = str(info.value)
    assert server.url + MIRROR + name in message and "404" in message
    assert server.counts()[MIRROR + name] == 1  # a 404 is not retried
    assert tree(tmp_path / "out") == set()


def test_download_unreachable_host(monkeypatch, tmp_path):
    # a port that was just free: connection refused, retried, then a DataError naming the URL
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mnist/"
    with pytest.raises(DataError, match=rf"train-images-idx3-ubyte.gz.*{url}.*3 attempts"):
        download_mnist(url, tmp_path / "out" / "raw", retries=3, backoff_s=0, timeout_s=2)
    assert tree(tmp_path / "out") == set()


def test_download_timeout(tmp_path):
    """A server that accepts but never answers must hit timeout_s, not hang.

    The download runs in a thread; if it has not given up after 10 s the test closes the
    listener (which resets the hung connection) and fails.
    """
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/mnist/"
    errors: list[BaseException] = []

    def target():
        try:
            download_mnist(url, tmp_path / "out" / "raw", retries=2, backoff_s=0, timeout_s=0.3)
        except BaseException as exc:  # noqa: BLE001 (handed to the main thread)
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=10)
    hung = thread.is_alive()
    listener.close()
    thread.join(timeout=5)
    assert not hung, "download_mnist ignored timeout_s"
    assert len(errors) == 1 and isinstance(errors[0], DataError)
    assert "train-images-idx3-ubyte.gz" in str(errors[0]) and url in str(errors[0])
    assert "2 attempts" in str(errors[0])
    assert tree(tmp_path / "out") == set()


def test_download_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="retries"):
        download_mnist("http://127.0.0.1:9/", tmp_path, retries=0)
    with pytest.raises(ValueError, match="timeout_s"):
        download_mnist("http://127.0.0.1:9/", tmp_path, timeout_s=0)


# --------------------------------------------------------------------------------------------
# copy_local_mnist
# --------------------------------------------------------------------------------------------


@pytest.fixture
def local_src(tmp_path, monkeypatch):
    """Four tiny .gz files in tmp_path/src; MNIST_FILES is patched to their md5s."""
    src = tmp_path / "src"
    write_tiny(src, tiny_mnist())
    monkeypatch.setattr(mnist, "MNIST_FILES", {n: mnist.md5sum(src / n) for n in mnist.MNIST_FILES})
    return src


def test_copy_local_good(local_src, tmp_path):
    dest = tmp_path / "work" / "raw"
    copy_local_mnist(local_src, dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(MNIST_FILES)
    for name in MNIST_FILES:
        assert (dest / name).read_bytes() == (local_src / name).read_bytes()
    assert tree(tmp_path / "work") == {"raw"} | {f"raw/{n}" for n in MNIST_FILES}


def test_copy_local_missing_file(local_src, tmp_path):
    (local_src / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match=rf"t10k-images-idx3-ubyte.gz.*{local_src}"):
        copy_local_mnist(local_src, tmp_path / "work" / "raw")
    assert not (tmp_path / "work").exists() or tree(tmp_path / "work") == set()


def test_copy_local_bad_checksum(local_src, tmp_path):
    name = "train-labels-idx1-ubyte.gz"
    expected = mnist.MNIST_FILES[name]
    write_idx(local_src / name, np.array([1, 2, 3, 4, 5, 6], np.uint8))  # valid, but not original
    actual = mnist.md5sum(local_src / name)
    with pytest.raises(ChecksumError) as info:
        copy_local_mnist(local_src, tmp_path / "work" / "raw")
    message = str(info.value)
    assert name in message and actual in message and expected in message
    assert not (tmp_path / "work").exists() or tree(tmp_path / "work") == set()
    # the same files pass without verification
    copy_local_mnist(local_src, tmp_path / "work" / "raw", verify_checksums=False)
    assert (tmp_path / "work" / "raw" / name).read_bytes() == (local_src / name).read_bytes()


def test_copy_local_uncompressed(tmp_path):
    src = tmp_path / "src"
    arrays = tiny_mnist()
    write_tiny(src, arrays, compressed=False)
    dest = tmp_path / "work" / "raw"
    with pytest.raises(DataError, match=r"\.gz files.*verify_checksums: false") as info:
        copy_local_mnist(src, dest)
    assert "train-images-idx3-ubyte" in str(info.value)
    assert not dest.exists()

    copy_local_mnist(src, dest, verify_checksums=False)
    # always the official .gz names, so the rule's outputs do not depend on what the folder held
    assert sorted(p.name for p in dest.iterdir()) == sorted(MNIST_FILES)
    out = preprocess_mnist(dest, pad_to=28)
    np.testing.assert_array_equal(out["test_y"], arrays["t10k-labels-idx1-ubyte.gz"])


def test_copy_local_unverified_still_checks_format(tmp_path):
    src = tmp_path / "src"
    write_tiny(src, tiny_mnist(), compressed=False)
    (src / "train-labels-idx1-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        copy_local_mnist(src, tmp_path / "raw", verify_checksums=False)
    # images and labels swapped
    write_tiny(src, tiny_mnist(), compressed=False)
    shutil.copyfile(src / "t10k-images-idx3-ubyte", src / "train-labels-idx1-ubyte")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.*3-d"):
        copy_local_mnist(src, tmp_path / "raw", verify_checksums=False)
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------------------------
# write_offline_mnist + preprocess_mnist
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("offline") / "raw"
    write_offline_mnist(folder, seed=0)
    return folder


def test_offline_files_are_idx(offline_dir):
    assert sorted(p.name for p in offline_dir.iterdir()) == sorted(MNIST_FILES)
    for name in MNIST_FILES:
        data = gzip.decompress((offline_dir / name).read_bytes())
        magic = struct.unpack(">I", data[:4])[0]
        assert magic == (2051 if "images" in name else 2049)
    train = read_idx(offline_dir / "train-images-idx3-ubyte.gz")
    test = read_idx(offline_dir / "t10k-images-idx3-ubyte.gz")
    assert train.shape[1:] == test.shape[1:] == (28, 28)
    assert len(train) + len(test) == 1797
    assert len(test) == 360  # ceil(0.2 * 1797)
    assert train.max() == 255 and train.min() == 0
    # the digit fills the centred 20x20 box; the 4-pixel frame is black
    frame = np.ones((28, 28), bool)
    frame[4:24, 4:24] = False
    assert not train[:, frame].any()
    assert train[:, 4:24, 4:24].any(axis=(1, 2)).all()


def test_offline_matches_sklearn_digits(offline_dir):
    """The first test image is a sklearn digit, upscaled independently here, with its label."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    test = read_idx(offline_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(offline_dir / "t10k-labels-idx1-ubyte.gz")
    up = F.interpolate(
        torch.tensor(digits.images, dtype=torch.float32)[:, None], size=(20, 20), mode="bilinear"
    )[
        :, 0
    ].numpy()  # (1797, 20, 20)
    up = np.clip(np.rint(up / 16 * 255), 0, 255)
    for i in range(5):
        matches = np.flatnonzero((up == test[i, 4:24, 4:24]).all(axis=(1, 2)))
        assert len(matches) >= 1
        assert (digits.target[matches] == labels[i]).all()


def test_offline_preprocess_round_trip(offline_dir):
    out = preprocess_mnist(offline_dir)
    assert set(out) == {"train_x", "train_y", "test_x", "test_y"}
    for split in ("train", "test"):
        x, y = out[f"{split}_x"], out[f"{split}_y"]
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (len(y), 1, 32, 32)
        assert x.min() == -1.0 and x.max() == 1.0
        # 2 px padding + 4 px black frame of the 28x28 canvas: a 6-pixel border of exactly -1
        border = np.ones((32, 32), bool)
        border[6:26, 6:26] = False
        assert (x[:, 0][:, border] == -1.0).all()
        assert sorted(np.unique(y).tolist()) == list(range(10))
    raw = read_idx(offline_dir / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(out["train_x"][:, 0, 2:30, 2:30], raw / np.float32(255) * 2 - 1)
    np.testing.assert_array_equal(
        out["train_y"], read_idx(offline_dir / "train-labels-idx1-ubyte.gz")
    )


def test_offline_stratified(offline_dir):
    from sklearn.datasets import load_digits

    total = np.bincount(load_digits().target, minlength=10)
    test = np.bincount(read_idx(offline_dir / "t10k-labels-idx1-ubyte.gz"), minlength=10)
    train = np.bincount(read_idx(offline_dir / "train-labels-idx1-ubyte.gz"), minlength=10)
    np.testing.assert_array_equal(test + train, total)
    # stratified: each class's test share is 0.2 up to rounding (at most one image off)
    assert np.abs(test - 0.2 * total).max() <= 1.0


def test_offline_deterministic(offline_dir, tmp_path):
    write_offline_mnist(tmp_path / "same", seed=0)
    write_offline_mnist(tmp_path / "other", seed=1)
    for name in MNIST_FILES:
        assert (tmp_path / "same" / name).read_bytes() == (offline_dir / name).read_bytes()
    other = read_idx(tmp_path / "other" / "t10k-labels-idx1-ubyte.gz")
    assert not np.array_equal(other, read_idx(offline_dir / "t10k-labels-idx1-ubyte.gz"))
    assert tree(tmp_path) == {"same", "other"} | {
        f"{d}/{n}" for d in ("same", "other") for n in MNIST_FILES
    }


def test_offline_arguments(tmp_path):
    write_offline_mnist(tmp_path / "big", test_fraction=0.5, image_size=32, digit_size=16)
    images = read_idx(tmp_path / "big" / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (899, 32, 32)
    assert not images[:, :8].any() and not images[:, 24:].any()
    with pytest.raises(ValueError, match="test_fraction"):
        write_offline_mnist(tmp_path / "x", test_fraction=1.0)
    with pytest.raises(ValueError, match="digit_size"):
        write_offline_mnist(tmp_path / "x", image_size=20, digit_size=28)
    assert not (tmp_path / "x").exists()


def test_preprocess_pad_to_28(offline_dir):
    out = preprocess_mnist(offline_dir, pad_to=28)
    raw = read_idx(offline_dir / "t10k-images-idx3-ubyte.gz")
    assert out["test_x"].shape == (len(raw), 1, 28, 28)
    np.testing.assert_array_equal(out["test_x"][:, 0], raw.astype(np.float32) / 255 * 2 - 1)


def test_preprocess_matches_torchvision_transform(offline_dir):
    """Our scaling equals ToTensor() + Normalize(0.5, 0.5) of the authors' code (float rounding)."""
    import torch
    from torchvision.transforms import Normalize, ToTensor

    raw = read_idx(offline_dir / "t10k-images-idx3-ubyte.gz")[:50]
    ours = preprocess_mnist(offline_dir, pad_to=28)["test_x"][:50]
    theirs = torch.stack([Normalize(0.5, 0.5)(ToTensor()(img)) for img in raw]).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert (theirs[ours == -1.0] == -1.0).all()


@pytest.mark.parametrize("pad_to", [27, 29, 31, 0, 16, 32.0, "32"])
def test_preprocess_bad_pad_to(tmp_path, pad_to):
    # checked before any file is read: the folder does not even exist
    with pytest.raises(ValueError, match="pad_to"):
        preprocess_mnist(tmp_path / "nowhere", pad_to=pad_to)


def test_preprocess_count_mismatch(tmp_path):
    arrays = tiny_mnist()
    arrays["t10k-labels-idx1-ubyte.gz"] = arrays["t10k-labels-idx1-ubyte.gz"][:3]
    write_tiny(tmp_path, arrays)
    with pytest.raises(
        DataError, match=r"t10k-images-idx3-ubyte.gz holds 4 .*t10k-labels-idx1-ubyte.gz holds 3"
    ):
        preprocess_mnist(tmp_path)


def test_preprocess_bad_label(tmp_path):
    arrays = tiny_mnist()
    arrays["train-labels-idx1-ubyte.gz"][2] = 10
    write_tiny(tmp_path, arrays)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: label 10"):
        preprocess_mnist(tmp_path)


def test_preprocess_missing_file(tmp_path):
    arrays = tiny_mnist()
    del arrays["train-images-idx3-ubyte.gz"]
    write_tiny(tmp_path, arrays)
    with pytest.raises(DataError, match=rf"train-images-idx3-ubyte.gz.*{tmp_path}"):
        preprocess_mnist(tmp_path)


def test_preprocess_real_test_split(real_dir, tmp_path):
    """Real test split with a tiny stand-in for the missing training images."""
    for name in REAL_FILES:
        os.symlink(real_dir / name, tmp_path / name)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((60000, 28, 28), np.uint8))
    out = preprocess_mnist(tmp_path)
    assert out["test_x"].shape == (10000, 1, 32, 32)
    assert out["test_x"].min() == -1.0 and out["test_x"].max() == 1.0
    assert out["test_y"][:10].tolist() == FIRST_TEST_LABELS
    assert np.bincount(out["train_y"]).tolist() == TRAIN_LABEL_COUNTS
    assert (out["test_x"][:, :, :2] == -1.0).all() and (out["test_x"][:, :, :, 30:] == -1.0).all()
