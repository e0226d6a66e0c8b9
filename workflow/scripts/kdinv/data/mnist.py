"""MNIST: the three data sources, the IDX reader and the preprocessing.

Sources (the ``data.mnist.source`` switch of the workflow):

- ``download``: :func:`download_mnist` fetches the four official gzip files from a mirror and checks
  their md5s against :data:`MNIST_FILES`.
- ``local``: :func:`copy_local_mnist` copies the four files from a folder the user already has.
- ``offline``: :func:`write_offline_mnist` writes a small MNIST look-alike built from
  scikit-learn's bundled 8x8 handwritten digits, for demos and CI without network access.

All three write the same four file names in the same IDX format, so the rest of the workflow reads
them with :func:`read_idx` / :func:`preprocess_mnist` and cannot tell them apart except by size.
Every writer stages its files in a temporary folder next to the destination and moves them in
with atomic renames only once all four are complete, so a failure leaves nothing behind.

The IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian header ``0x00 0x00 <type>
<ndim>`` (type 0x08 = unsigned byte), then ``ndim`` big-endian uint32 dimensions, then the
row-major payload. Images have magic 0x00000803 (N, 28, 28); labels 0x00000801 (N,).

Preprocessing follows docs/data.md: pixels x in 0..255 are mapped to x / 255 * 2 - 1 in [-1, 1]
(background exactly -1.0; this equals the authors' ``ToTensor()`` + ``Normalize(0.5, 0.5)``) and
padded with the background value to 32x32; ``pad_to=28`` reproduces the authors' unpadded images.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np

from kdinv.data.download import ChecksumError, DataError, fetch_file, md5sum, staging_dir

logger = logging.getLogger(__name__)

# The four official files and their md5s. They are the values of
# ``torchvision.datasets.MNIST.resources`` (tests/unit/data/test_mnist.py checks that they stay equal);
# they are written out here so that the table does not depend on the installed torchvision and a
# change there shows up as a failing test instead of silently changing what we accept.
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: The (images, labels) file names of each split.
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
MNIST_SIZE = 28  # side of an MNIST image in pixels
NUM_CLASSES = 10

_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _uncompressed_name(name: str) -> str:
    """``'x.gz'`` -> ``'x'``; other names unchanged."""
    return name.removesuffix(".gz")


def _checksum_message(name: str, actual: str, expected: str) -> str:
    return (
        f"{name}: md5 {actual} does not match the official {expected}; "
        "the file is corrupt or not the original MNIST file"
    )


def _commit(staged: list[Path], dest_dir: Path) -> None:
    """Move the complete, checked ``staged`` files into ``dest_dir`` with atomic renames.

    Each rename is atomic. If one fails, the files this call already moved are removed again so
    that ``dest_dir`` never holds a mix of new and missing files from this call.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    moved: list[Path] = []
    try:
        for src in staged:
            target = dest_dir / src.name
            os.replace(src, target)
            moved.append(target)
    except OSError:
        for target in moved:
            target.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# IDX reading and writing
# --------------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Read an MNIST IDX file, gzip-compressed or not, into a uint8 array.

    Compression is detected by the ``.gz`` suffix or by the gzip magic bytes ``1f 8b``. The
    header must be 0x00000803 (images, 3-d) or 0x00000801 (labels, 1-d), followed by the
    big-endian uint32 dimensions; the payload must hold exactly prod(dims) bytes.

    Args:
        path: the file.

    Returns:
        A writable uint8 array of shape (N, rows, cols) for images or (N,) for labels.

    Raises:
        DataError: the file is missing, is not valid gzip, has another magic number, or its
            payload is shorter or longer than its header says (the message names the file and
            both byte counts).
    """
    path = Path(path)
    name = path.name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name}: file not found ({path})") from None
    if name.endswith(".gz") or raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{name}: not a valid gzip file or truncated ({exc}) [{path}]") from exc

    if len(raw) < 4:
        raise DataError(f"{name}: {len(raw)} bytes, too short for an IDX header [{path}]")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic not in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC):
        raise DataError(
            f"{name}: IDX magic number 0x{magic:08x} is neither 0x{IDX_IMAGES_MAGIC:08x} (uint8 "
            f"images, 3-d) nor 0x{IDX_LABELS_MAGIC:08x} (uint8 labels, 1-d); not an MNIST file "
            f"[{path}]"
        )
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(
            f"{name}: truncated header, expected {header_len} bytes, got {len(raw)} [{path}]"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(raw) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "has extra bytes"
        raise DataError(
            f"{name}: payload {what}: the header's dimensions {tuple(dims)} need {expected} bytes "
            f"after the {header_len}-byte header, the payload has {actual} [{path}]"
        )
    # frombuffer over bytes is read-only; copy so that callers own a normal writable array.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array as an IDX file (the inverse of :func:`read_idx`).

    Args:
        path: the file to write (not atomically; callers stage it in a temporary folder).
        array: uint8 images (N, rows, cols) or labels (N,).
        compress: gzip the file; ``None`` means "if ``path`` ends with ``.gz``". The gzip header
            has mtime 0 and no file name, so equal arrays give byte-identical files.

    Raises:
        ValueError: the array is not uint8 with 1 or 3 dimensions.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise ValueError(
            f"write_idx needs a uint8 array with 1 or 3 dimensions, got {array.dtype} {array.shape}"
        )
    path = Path(path)
    magic = IDX_IMAGES_MAGIC if array.ndim == 3 else IDX_LABELS_MAGIC
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    payload = header + np.ascontiguousarray(array).tobytes()
    if compress is None:
        compress = path.name.endswith(".gz")
    with open(path, "wb") as fh:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
                gz.write(payload)
        else:
            fh.write(payload)


def find_raw_file(raw_dir: str | Path, name: str) -> Path:
    """Return the path of an MNIST file in ``raw_dir``, compressed or not.

    Args:
        raw_dir: the folder.
        name: the official name, e.g. ``"t10k-images-idx3-ubyte.gz"`` (with or without ``.gz``).

    Returns:
        ``raw_dir/<name>.gz`` if it exists, else its uncompressed twin ``raw_dir/<name>``.

    Raises:
        DataError: neither exists (the message names both and the folder).
    """
    raw_dir = Path(raw_dir)
    gz_name = name if name.endswith(".gz") else f"{name}.gz"
    for candidate in (raw_dir / gz_name, raw_dir / _uncompressed_name(gz_name)):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{gz_name}: missing: neither {gz_name} nor its uncompressed twin "
        f"{_uncompressed_name(gz_name)} is in {raw_dir}"
    )


# --------------------------------------------------------------------------------------------
# Source "download"
# --------------------------------------------------------------------------------------------


def download_mnist(
    base_url: str,
    dest_dir: str | Path,
    retries: int = 3,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
) -> None:
    """Download the four official MNIST gzip files and verify their md5s.

    Each file ``<base_url>/<name>`` (names and md5s from :data:`MNIST_FILES`) is fetched with
    :func:`kdinv.data.download.fetch_file` into a temporary folder next to ``dest_dir`` and
    checked against its official md5. Network errors,
    timeouts, HTTP 5xx/408/425/429 and md5 mismatches are retried, up to ``retries`` attempts per
    file in all, sleeping ``backoff_s * 2**(k-1)`` seconds before attempt k+1. Other HTTP 4xx
    errors (e.g. 404, a wrong ``base_url``) fail at once. Only when all four files are verified
    are they moved into ``dest_dir`` (one atomic rename each); existing files of the same names
    are replaced.

    Args:
        base_url: the mirror, e.g. ``https://ossci-datasets.s3.amazonaws.com/mnist/`` (a
            trailing slash is optional); ``file://`` URLs work too.
        dest_dir: the folder that receives the four ``.gz`` files; created on success only.
        retries: attempts per file in all, >= 1.
        backoff_s: base of the exponential back-off between attempts, seconds, >= 0.
        timeout_s: socket timeout of each connection and read, seconds, > 0.

    Raises:
        ChecksumError: a file's md5 still differed on the last attempt (message: file, URL,
            actual and expected md5).
        DownloadError: a file could not be fetched (message: file, URL and the HTTP status or
            network error).
        ValueError: an argument is out of range.

    On any error nothing is left behind: no temporary folder, no file in ``dest_dir``.
    """
    if retries < 1:
        raise ValueError(f"retries must be >= 1, got {retries}")
    if backoff_s < 0:
        raise ValueError(f"backoff_s must be >= 0, got {backoff_s}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    dest_dir = Path(dest_dir)
    base = base_url if base_url.endswith("/") else base_url + "/"
    files = dict(MNIST_FILES)  # read at call time so that tests can monkeypatch the table

    with staging_dir(dest_dir) as tmp:
        staged = [
            fetch_file(base + name, tmp / name, md5=expected_md5, retries=retries,
                       backoff_s=backoff_s, timeout_s=timeout_s)
            for name, expected_md5 in files.items()
        ]  # fmt: skip
        _commit(staged, dest_dir)
    logger.info("MNIST: %d files downloaded into %s", len(staged), dest_dir)


# --------------------------------------------------------------------------------------------
# Source "local"
# --------------------------------------------------------------------------------------------


def _check_kind(path: Path, array: np.ndarray) -> None:
    """An images file must hold a 3-d array, a labels file a 1-d one."""
    want = 3 if "images" in path.name else 1
    if array.ndim != want:
        raise DataError(
            f"{path.name}: holds a {array.ndim}-d array {array.shape}, expected "
            f"{'images (N, rows, cols)' if want == 3 else 'labels (N,)'} [{path}]"
        )


def copy_local_mnist(
    src_dir: str | Path, dest_dir: str | Path, verify_checksums: bool = True
) -> None:
    """Copy the four MNIST files from a local folder (the ``local`` source).

    ``src_dir`` holds each file either as the official ``.gz`` or uncompressed (the same name
    without ``.gz``); when both exist the ``.gz`` is used. Every file arrives in ``dest_dir`` under
    its official ``.gz`` name (uncompressed files are gzip-compressed on the way), so the rule's
    outputs are the same whatever the source held. The copies are staged next to ``dest_dir`` and
    moved in with atomic renames once all four are checked.

    Args:
        src_dir: the folder with the four files.
        dest_dir: the folder that receives them.
        verify_checksums: check each ``.gz`` against the official md5 of :data:`MNIST_FILES`.
            The official md5s are those of the ``.gz`` files, so uncompressed files can only be
            accepted with ``verify_checksums=False``. Without verification each file is still
            read to check that it is a well-formed IDX file of the right kind.

    Raises:
        DataError: a file is missing (message: file and folder), an uncompressed file was given
            with ``verify_checksums=True``, or an unverified file is not a valid IDX file.
        ChecksumError: a ``.gz`` file's md5 differs from the official one.
    """
    src_dir = Path(src_dir)
    dest_dir = Path(dest_dir)
    files = dict(MNIST_FILES)
    sources = [find_raw_file(src_dir, name) for name in files]

    for name, src in zip(files, sources):
        if not verify_checksums:
            _check_kind(src, read_idx(src))
        elif src.name.endswith(".gz"):
            actual = md5sum(src)
            if actual != files[name]:
                raise ChecksumError(f"{_checksum_message(name, actual, files[name])} [{src}]")
        else:
            raise DataError(
                f"{src.name}: only the uncompressed file is in {src_dir}; the official MNIST "
                f"checksums are those of the .gz files ({name}), so it cannot be verified. "
                "Provide the original .gz files, or set `verify_checksums: false` to accept "
                "your own files."
            )

    with staging_dir(dest_dir) as tmp:
        staged = []
        for name, src in zip(files, sources):
            if src.name.endswith(".gz"):
                shutil.copyfile(src, tmp / name)
            else:
                with open(src, "rb") as fin, gzip.GzipFile(tmp / name, "wb", mtime=0) as fout:
                    shutil.copyfileobj(fin, fout)
            staged.append(tmp / name)
        _commit(staged, dest_dir)
    logger.info(
        "MNIST: copied %s from %s into %s (checksums %s)",
        ", ".join(s.name for s in sources),
        src_dir,
        dest_dir,
        "verified" if verify_checksums else "not verified",
    )


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def _check_pad_to(pad_to: int, size: int) -> None:
    if isinstance(pad_to, bool) or not isinstance(pad_to, (int, np.integer)):
        raise ValueError(f"pad_to must be an integer, got {pad_to!r}")
    if pad_to < size or (pad_to - size) % 2:
        raise ValueError(
            f"pad_to={pad_to} is invalid for {size}x{size} images: it must be >= {size} and "
            f"pad_to - {size} must be even (symmetric padding); 32 is the default, {size} means "
            "no padding"
        )


def _load_split(raw_dir: Path, split: str, pad_to: int) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = SPLIT_FILES[split]
    images_path = find_raw_file(raw_dir, images_name)
    labels_path = find_raw_file(raw_dir, labels_name)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    _check_kind(images_path, images)
    _check_kind(labels_path, labels)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path.name} holds {len(images)} images but {labels_path.name} holds "
            f"{len(labels)} labels [{raw_dir}]"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(
            f"{labels_path.name}: label {int(labels.max())} is outside 0..{NUM_CLASSES - 1} "
            f"[{labels_path}]"
        )
    n, rows, cols = images.shape
    if rows != cols:
        raise DataError(f"{images_path.name}: images are {rows}x{cols}, not square")
    _check_pad_to(pad_to, rows)
    off = (pad_to - rows) // 2
    # x / 255 * 2 - 1 in float32: 0 -> -1.0 and 255 -> 1.0 exactly; the border is background.
    x = np.full((n, 1, pad_to, pad_to), -1.0, dtype=np.float32)  # (N, 1, pad_to, pad_to)
    inner = images.astype(np.float32)
    inner /= 255.0
    inner *= 2.0
    inner -= 1.0
    x[:, 0, off : off + rows, off : off + cols] = inner
    return x, labels.astype(np.int64)


def preprocess_mnist(raw_dir: str | Path, pad_to: int = 32) -> dict[str, np.ndarray]:
    """Read the four MNIST files and return network-ready arrays.

    Pixels x in 0..255 become x / 255 * 2 - 1 in [-1, 1] (float32; background exactly -1.0,
    the same values as the authors' ``ToTensor()`` + ``Normalize(0.5, 0.5)`` up to float
    rounding), and each 28x28 image is padded symmetrically with the background value -1 to
    ``pad_to`` x ``pad_to``, so that every stride-2 stage of ResNet18-APS sees an even size
    (docs/decisions.md). ``pad_to=28`` means no padding, as in the authors' code.

    Args:
        raw_dir: folder with the four files, each ``.gz`` or uncompressed
            (see :func:`find_raw_file`).
        pad_to: side of the output images; >= 28 with pad_to - 28 even.

    Returns:
        ``{"train_x": float32 (N_train, 1, pad_to, pad_to), "train_y": int64 (N_train,),
        "test_x": float32 (N_test, 1, pad_to, pad_to), "test_y": int64 (N_test,)}``.

    Raises:
        ValueError: ``pad_to`` is invalid (checked before any file is read).
        DataError: a file is missing or malformed, image and label counts differ (the message
            names both files), or a label lies outside 0..9.
    """
    _check_pad_to(pad_to, MNIST_SIZE)
    raw_dir = Path(raw_dir)
    train_x, train_y = _load_split(raw_dir, "train", pad_to)
    test_x, test_y = _load_split(raw_dir, "test", pad_to)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"train images {train_x.shape[1:]} and test images {test_x.shape[1:]} differ in "
            f"size [{raw_dir}]"
        )
    logger.info(
        "MNIST preprocessed from %s: %d train, %d test images, %dx%d in [-1, 1]",
        raw_dir, len(train_y), len(test_y), pad_to, pad_to,
    )  # fmt: skip
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def fetch_mnist(spec: dict, raw: Path) -> None:
    """Rule fetch_mnist's job: the four raw files (:data:`MNIST_FILES`) in ``raw`` from the
    configured source (``spec``: ``source`` and the keys it reads, :mod:`kdinv.data.kinds`)."""
    if spec["source"] == "download":
        download_mnist(spec["url"], raw)
    elif spec["source"] == "local":
        copy_local_mnist(spec["local_dir"], raw, verify_checksums=spec["verify_checksums"])
    else:
        from kdinv.data.offline.mnist import write_offline_mnist

        write_offline_mnist(raw, seed=spec["seed"], test_fraction=spec["offline_test_fraction"])


def write_mnist_splits(source: Path, outputs: dict[str, str], processes: int, pad_to: int) -> None:
    """Rule prepare_mnist's job: the raw IDX files in the folder ``source`` -> the split files
    ``outputs`` (by split), scaled and padded to ``pad_to`` (:func:`preprocess_mnist`)."""
    from kdinv.data.splits import save_split

    data = preprocess_mnist(source, pad_to=pad_to)
    classes = [str(d) for d in range(NUM_CLASSES)]
    save_split(data["train_x"], data["train_y"], NUM_CLASSES, outputs["train"], classes=classes)
    save_split(data["test_x"], data["test_y"], NUM_CLASSES, outputs["test"], classes=classes)
    logger.info("train %s, test %s", data["train_x"].shape, data["test_x"].shape)
