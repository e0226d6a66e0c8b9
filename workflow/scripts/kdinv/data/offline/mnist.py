"""MNIST, source ``offline``: an MNIST look-alike in the official IDX files, made from
scikit-learn's bundled 8x8 handwritten digits, for the demo and CI without network access."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kdinv.data.download import staging_dir
from kdinv.data.mnist import _commit, write_idx

logger = logging.getLogger(__name__)


def _digits_canvas(images: np.ndarray, image_size: int, digit_size: int) -> np.ndarray:
    """Upscale 8x8 digits (values 0..16) to ``digit_size`` and centre them on a black canvas.

    Returns uint8 (N, image_size, image_size) with 0 background and 255 full ink.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images.astype(np.float32))[:, None]  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(digit_size, digit_size), mode="bilinear", align_corners=False)
    x = x[:, 0].numpy()  # (N, digit_size, digit_size), still 0..16
    digits = np.clip(np.rint(x / 16.0 * 255.0), 0, 255).astype(np.uint8)
    canvas = np.zeros((len(images), image_size, image_size), dtype=np.uint8)
    off = (image_size - digit_size) // 2
    canvas[:, off : off + digit_size, off : off + digit_size] = digits
    return canvas


def write_offline_mnist(
    dest_dir: str | Path,
    seed: int = 0,
    test_fraction: float = 0.2,
    image_size: int = 28,
    digit_size: int = 20,
) -> None:
    """Write an MNIST look-alike from scikit-learn's bundled digits (the ``offline`` source).

    The data are the 1,797 real 8x8 handwritten digits of ``sklearn.datasets.load_digits``
    (UCI optical recognition of handwritten digits; values 0..16, shipped inside the wheel, no
    network). Each is upscaled to ``digit_size`` x ``digit_size`` (bilinear, align_corners=False),
    mapped to 0..255 (v / 16 * 255, rounded) and pasted centred in an ``image_size`` x
    ``image_size`` black canvas, like MNIST's 20x20 digit box in 28x28. The set is split
    stratified by label (``sklearn.model_selection.train_test_split`` with ``random_state=seed``)
    and written as the four official file names in gzip IDX format, byte-identical for equal
    arguments (gzip mtime 0).

    Args:
        dest_dir: the folder that receives the four ``.gz`` files.
        seed: seed of the train/test split.
        test_fraction: share of the images in the test split, in (0, 1).
        image_size: side of the canvas, pixels.
        digit_size: side of the upscaled digit, pixels, 1 <= digit_size <= image_size.

    Raises:
        ValueError: an argument is out of range.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if not 1 <= digit_size <= image_size:
        raise ValueError(
            f"need 1 <= digit_size <= image_size, got digit_size={digit_size}, "
            f"image_size={image_size}"
        )
    dest_dir = Path(dest_dir)
    digits = load_digits()
    images = _digits_canvas(digits.images, image_size, digit_size)
    labels = digits.target.astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    arrays = {
        "train-images-idx3-ubyte.gz": x_train,
        "train-labels-idx1-ubyte.gz": y_train,
        "t10k-images-idx3-ubyte.gz": x_test,
        "t10k-labels-idx1-ubyte.gz": y_test,
    }
    with staging_dir(dest_dir) as tmp:
        staged = []
        for name, array in arrays.items():
            write_idx(tmp / name, array)
            staged.append(tmp / name)
        _commit(staged, dest_dir)
    logger.info(
        "MNIST offline demo (sklearn digits, %dx%d in %dx%d, seed %d): %d train, %d test "
        "images written into %s",
        digit_size, digit_size, image_size, image_size, seed, len(y_train), len(y_test), dest_dir,
    )  # fmt: skip
