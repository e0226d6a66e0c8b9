"""ModelNet40, source ``offline``: seeded parametric shapes (sphere, box, cylinder, cone, torus,
ellipsoid, capsule, pyramid) written as OFF meshes in the real layout and with the real files'
quirks, for the demo and CI without network access."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kdinv.data.download import staging_dir
from kdinv.data.modelnet import _key_words, write_off

logger = logging.getLogger(__name__)


Mesh = tuple[np.ndarray, list[list[int]]]


def _revolve(
    profile: Sequence[tuple[float, float]], segments: int, quads: bool = False, caps: bool = False
) -> Mesh:
    """A surface of revolution around the z axis.

    ``profile`` lists (radius, z) from one end to the other; radius 0 is a pole (one vertex).
    Consecutive rings are joined by quads (``quads=True``) or pairs of triangles; a ring next to a
    pole by a triangle fan. ``caps=True`` closes an end ring with one polygon of ``segments``
    vertices.
    """
    angles = 2 * np.pi * np.arange(segments) / segments
    vertices: list[np.ndarray] = []
    rings: list[list[int]] = []  # vertex indices of each profile point (1 for a pole)
    count = 0
    for r, z in profile:
        if r == 0:
            vertices.append(np.array([[0.0, 0.0, z]]))
            rings.append([count])
            count += 1
        else:
            ring = np.stack([r * np.cos(angles), r * np.sin(angles), np.full(segments, z)], axis=1)
            vertices.append(ring)
            rings.append(list(range(count, count + segments)))
            count += segments
    faces: list[list[int]] = []
    for a, b in itertools.pairwise(rings):
        for j in range(segments):
            k = (j + 1) % segments
            if len(a) == 1:
                faces.append([a[0], b[k], b[j]])
            elif len(b) == 1:
                faces.append([a[j], a[k], b[0]])
            elif quads:
                faces.append([a[j], a[k], b[k], b[j]])
            else:
                faces.extend([[a[j], a[k], b[k]], [a[j], b[k], b[j]]])
    if caps:
        if len(rings[0]) > 1:
            faces.append(rings[0][::-1])
        if len(rings[-1]) > 1:
            faces.append(list(rings[-1]))
    return np.concatenate(vertices), faces


def _sphere_profile(rng: np.random.Generator) -> list[tuple[float, float]]:
    """(radius, z) of a unit sphere from pole to pole, 8..12 latitude bands."""
    n_lat = int(rng.integers(8, 13))
    theta = np.pi * np.arange(n_lat + 1) / n_lat
    return [(float(np.sin(t)) if 0 < i < n_lat else 0.0, float(np.cos(t)))
            for i, t in enumerate(theta)]  # fmt: skip


def _make_sphere(rng: np.random.Generator) -> Mesh:
    return _revolve(_sphere_profile(rng), int(rng.integers(12, 19)))


def _make_ellipsoid(rng: np.random.Generator) -> Mesh:
    vertices, faces = _revolve(_sphere_profile(rng), int(rng.integers(12, 19)))
    axes = rng.permutation([1.0, rng.uniform(0.35, 0.7), rng.uniform(0.15, 0.4)])
    return vertices * axes, faces


def _make_box(rng: np.random.Generator) -> Mesh:
    """A box whose six sides are grids of m x m quads."""
    size = rng.uniform(0.3, 1.0, size=3)
    m = int(rng.integers(2, 5))
    grid = np.linspace(-0.5, 0.5, m + 1)
    index: dict[tuple[float, float, float], int] = {}
    vertices: list[tuple[float, float, float]] = []
    faces: list[list[int]] = []

    def vid(p: tuple[float, float, float]) -> int:
        if p not in index:
            index[p] = len(vertices)
            vertices.append(p)
        return index[p]

    for axis in range(3):
        u_ax, v_ax = [a for a in range(3) if a != axis]
        for side in (-0.5, 0.5):
            for i in range(m):
                for j in range(m):
                    corners = []
                    for du, dv in ((0, 0), (1, 0), (1, 1), (0, 1)):
                        p = [0.0, 0.0, 0.0]
                        p[axis], p[u_ax], p[v_ax] = side, grid[i + du], grid[j + dv]
                        corners.append(vid(tuple(p)))
                    faces.append(corners)
    return np.array(vertices) * size, faces


def _make_cylinder(rng: np.random.Generator) -> Mesh:
    """Side quads, and each cap one polygon of 10..20 vertices."""
    r, h = rng.uniform(0.25, 1.0), rng.uniform(0.5, 2.0)
    return _revolve([(r, h / 2), (r, -h / 2)], int(rng.integers(10, 21)), quads=True, caps=True)


def _make_cone(rng: np.random.Generator) -> Mesh:
    r, h = rng.uniform(0.3, 1.0), rng.uniform(0.6, 2.0)
    return _revolve([(0.0, h / 2), (r, -h / 2), (0.0, -h / 2)], int(rng.integers(12, 25)))


def _make_capsule(rng: np.random.Generator) -> Mesh:
    """A cylinder closed by two hemispheres."""
    r, h = rng.uniform(0.25, 0.6), rng.uniform(0.5, 2.0)
    theta = np.linspace(0.0, np.pi / 2, int(rng.integers(3, 7)) + 1)
    top = [(r * float(np.sin(t)) if i else 0.0, h / 2 + r * float(np.cos(t)))
           for i, t in enumerate(theta)]  # fmt: skip
    bottom = [(rad, -z) for rad, z in reversed(top)]
    return _revolve(top + bottom, int(rng.integers(12, 19)))


def _make_torus(rng: np.random.Generator) -> Mesh:
    big, small = 1.0, rng.uniform(0.15, 0.45)
    n_major, n_minor = int(rng.integers(14, 23)), int(rng.integers(8, 13))
    phi = 2 * np.pi * np.arange(n_major) / n_major
    theta = 2 * np.pi * np.arange(n_minor) / n_minor
    p, t = np.meshgrid(phi, theta, indexing="ij")
    vertices = np.stack(
        [(big + small * np.cos(t)) * np.cos(p), (big + small * np.cos(t)) * np.sin(p),
         small * np.sin(t)], axis=-1,
    ).reshape(-1, 3)  # fmt: skip
    faces = []
    for i in range(n_major):
        for j in range(n_minor):
            a, b = i * n_minor + j, i * n_minor + (j + 1) % n_minor
            nxt = ((i + 1) % n_major) * n_minor
            c, d = nxt + (j + 1) % n_minor, nxt + j
            faces.extend([[a, b, c], [a, c, d]])
    return vertices, faces


def _make_pyramid(rng: np.random.Generator) -> Mesh:
    """A square-based pyramid: a quad base and four triangles."""
    a, b, h = rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.5)
    vertices = np.array(
        [[-a / 2, -b / 2, 0], [a / 2, -b / 2, 0], [a / 2, b / 2, 0], [-a / 2, b / 2, 0], [0, 0, h]]
    )
    return vertices, [[3, 2, 1, 0], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]]


#: The shapes of the offline source: name -> (generator, counts glued to the header).
OFFLINE_SHAPES: dict[str, tuple[Callable[[np.random.Generator], Mesh], bool]] = {
    "sphere": (_make_sphere, False),
    "box": (_make_box, True),
    "cylinder": (_make_cylinder, False),
    "cone": (_make_cone, False),
    "torus": (_make_torus, True),
    "ellipsoid": (_make_ellipsoid, False),
    "capsule": (_make_capsule, True),
    "pyramid": (_make_pyramid, False),
}


OFFLINE_CLASSES: tuple[str, ...] = tuple(OFFLINE_SHAPES)


_CRLF_SHARE = 0.3  # share of offline files written with CRLF line ends


_COMMENT_SHARE = 0.1  # share of offline files with a '#' comment line


def _replace_dir(staged: Path, dest: Path) -> None:
    """Move the folder ``staged`` to ``dest``; an existing ``dest`` is swapped out, then removed."""
    if not dest.exists():
        os.replace(staged, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.replace(dest, old / dest.name)
    try:
        os.replace(staged, dest)
    except OSError:
        os.replace(old / dest.name, dest)  # put the old tree back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def write_offline_modelnet(
    dest: str | Path,
    seed: int,
    train_per_class: int,
    test_per_class: int,
    classes: Sequence[str] = OFFLINE_CLASSES,
) -> None:
    """Write a seeded ModelNet look-alike of parametric shapes (the ``offline`` source).

    Each mesh is a triangulated parametric surface of its class (see :data:`OFFLINE_SHAPES`:
    sphere, box, cylinder, cone, torus, ellipsoid, capsule, pyramid) with random proportions and
    resolution (tens to a few hundred faces), then scaled by a random factor in [0.5, 20] and
    shifted by a random offset in [-20, 20]^3, so normalisation matters. The files use the real
    layout ``dest/<class>/{train,test}/<class>_NNNN.off``, numbered from 0001 with the test files
    continuing after the train ones (as in ModelNet), and reproduce the real quirks: the counts
    glued to the header for some classes (box, torus, capsule), CRLF line ends in ~30% of the
    files, quads (box, cylinder sides, pyramid base), polygons of 10+ vertices (cylinder caps) and
    a ``#`` comment in ~10%. Every mesh has its own generator seeded with ``seed`` and the sha256
    of ``<class>/<split>/<file>``, so equal arguments give byte-identical files.

    The tree is written into a temporary folder next to ``dest`` and renamed into place at the
    end; an existing ``dest`` is replaced. On failure nothing is left behind.

    Args:
        dest: the folder that receives the class folders.
        seed: the generator seed, >= 0.
        train_per_class: train meshes per class, >= 1.
        test_per_class: test meshes per class, >= 0.
        classes: shape names, a subset of :data:`OFFLINE_SHAPES`, without repeats.

    Raises:
        ValueError: an argument is out of range or a class name is unknown.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if train_per_class < 1 or test_per_class < 0:
        raise ValueError(
            f"need train_per_class >= 1 and test_per_class >= 0, got {train_per_class} and "
            f"{test_per_class}"
        )
    classes = list(classes)
    unknown = [c for c in classes if c not in OFFLINE_SHAPES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(
            f"classes must be distinct names from {sorted(OFFLINE_SHAPES)}, got {classes}"
        )
    dest = Path(dest)
    with staging_dir(dest) as tmp:
        tree = tmp / dest.name
        for cls in classes:
            make, glued = OFFLINE_SHAPES[cls]
            number = 0
            for split, count in (("train", train_per_class), ("test", test_per_class)):
                folder = tree / cls / split
                folder.mkdir(parents=True)
                for _ in range(count):
                    number += 1
                    file_name = f"{cls}_{number:04d}.off"
                    rng = np.random.default_rng(
                        [seed, *_key_words(f"offline/{cls}/{split}/{file_name}")]
                    )
                    vertices, faces = make(rng)
                    vertices = vertices * rng.uniform(0.5, 20.0) + rng.uniform(-20.0, 20.0, 3)
                    crlf = bool(rng.random() < _CRLF_SHARE)
                    with_comment = rng.random() < _COMMENT_SHARE
                    comment = "kdinv offline ModelNet look-alike" if with_comment else None
                    write_off(folder / file_name, vertices, faces, crlf=crlf,
                              glued_header=glued, comment=comment)  # fmt: skip
        _replace_dir(tree, dest)
    logger.info(
        "ModelNet offline demo (seed %d): %d classes x (%d train + %d test) meshes written into %s",
        seed, len(classes), train_per_class, test_per_class, dest,
    )  # fmt: skip
