"""ModelNet40: the three data sources, the OFF mesh reader and the point-cloud preprocessing.

Sources (the ``data.modelnet.source`` switch of the workflow):

- ``download``: :func:`download_modelnet` fetches the official ``ModelNet40.zip`` (2.04 GB, from
  the Princeton host PyG uses) with a resumable download and checks its size and md5.
- ``local``: :func:`resolve_local_modelnet` accepts a ``ModelNet40.zip`` the user already has, a
  folder holding it, or an extracted tree.
- ``offline``: :func:`write_offline_modelnet` writes a small, seeded look-alike made of parametric
  shapes (sphere, box, cylinder, cone, torus, ...) as OFF files in the real layout, for demos and
  CI without network access.

All three are read by :func:`list_meshes` / :func:`prepare_modelnet`, which work on the zip as well
as on an extracted tree, so the rest of the workflow cannot tell them apart except by the classes.

Layout (the official zip, and PyG's ``raw/`` folder): ``ModelNet40/<class>/<split>/<class>_NNNN.off``
with ``<split>`` in ``train`` / ``test`` (9,843 / 2,468 meshes). Labels are the indices of the
class folders sorted alphabetically (as in PyG's ``ModelNet.process_set``); within a class the
meshes are sorted by file name (PyG uses unsorted ``glob``).

The OFF format (Object File Format): a first line ``OFF``, a line ``<#vertices> <#faces>
<#edges>``, one line ``x y z`` per vertex, one line ``k i_1 ... i_k [colour]`` per face (0-based
vertex indices). ModelNet's files have known quirks that :func:`read_off` handles: in 7 classes of
ModelNet40 the counts are glued to the header (``OFF3514 3546 0``), some files use CRLF line ends,
and faces may be polygons with more than three vertices (they are fan-triangulated). ``#``
comments and blank lines are allowed.

Preprocessing follows docs/data.md and the authors' PyG pre-transform
``Compose([NormalizeScale(), SamplePoints(1000)])``: the mesh vertices are centred on their mean
and scaled by 0.999999 / max|coordinate| (:func:`normalize_mesh`), then ``n`` points are sampled
once on the surface, faces with probability proportional to their area (:func:`sample_points`).
Each mesh's points come from its own generator, seeded with the workflow seed and a sha256 of
``<class>/<split>/<file>``, so they do not depend on the number of worker processes, the order of
the files, or whether the meshes come from the zip or a folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from kdinv.data.download import DataError, fetch_file

logger = logging.getLogger(__name__)

MODELNET40_URL = "http://modelnet.cs.princeton.edu/ModelNet40.zip"
MODELNET40_MD5 = "79bcee68fdf02f581938ba15f4cdca51"
MODELNET40_SIZE = 2_039_180_837
MODELNET40_ZIP_NAME = "ModelNet40.zip"

#: The 40 class names in label order (alphabetical, as PyG numbers them).
MODELNET40_CLASSES: tuple[str, ...] = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard",
    "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio",
    "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase",
    "wardrobe", "xbox",
)  # fmt: skip

SPLITS = ("train", "test")
#: PyG's NormalizeScale factor: the largest absolute coordinate becomes 0.999999.
NORMALIZE_SCALE = 0.999999
# Folder / member names that are never meshes: macOS resource forks of the official zip.
_IGNORED_DIRS = {"__MACOSX"}
_PROGRESS_EVERY = 1000


# --------------------------------------------------------------------------------------------
# OFF reading and writing
# --------------------------------------------------------------------------------------------


def _next_line(text: str, pos: int) -> tuple[str, int]:
    """The next non-blank line from ``pos`` on (stripped; ``""`` at the end) and the position
    after it. ``text`` uses ``\\n`` line ends only."""
    while pos < len(text):
        end = text.find("\n", pos)
        if end < 0:
            end = len(text)
        line = text[pos:end].strip()
        if line:
            return line, end + 1
        pos = end + 1
    return "", len(text)


def _parse_counts(tokens: list[str], label: str) -> tuple[int, int]:
    """The vertex and face counts of an OFF header (the edge count is ignored)."""
    if len(tokens) < 2:
        raise DataError(
            f"{label}: malformed OFF header: expected '<#vertices> <#faces> <#edges>' after "
            f"'OFF', got {' '.join(tokens)!r}"
        )
    try:
        nv, nf = int(tokens[0]), int(tokens[1])
    except ValueError:
        raise DataError(
            f"{label}: malformed OFF header: the counts {' '.join(tokens[:3])!r} are not integers"
        ) from None
    if nv < 0 or nf < 0:
        raise DataError(f"{label}: malformed OFF header: negative count in {tokens[:3]}")
    return nv, nf


def _fan(polygon: Sequence[int]) -> list[tuple[int, int, int]]:
    """Fan-triangulate a polygon (i0, i1, ..., ik-1) into (i0, ij, ij+1), j = 1..k-2.

    For a quad this gives (0, 1, 2) and (0, 2, 3), the split PyG's ``face_to_tri`` uses.
    """
    return [(polygon[0], polygon[j], polygon[j + 1]) for j in range(1, len(polygon) - 1)]


def _vertices_by_line(lines: list[tuple[int, list[str]]], label: str) -> np.ndarray:
    """Parse vertex lines (line number, tokens): the first three tokens of each, extra ignored."""
    if all(len(tokens) == 3 for _, tokens in lines):
        joined = " ".join(t for _, tokens in lines for t in tokens)
        with contextlib.suppress(ValueError):  # a bad token: the loop below says where
            return np.fromstring(joined, dtype=np.float64, sep=" ").reshape(-1, 3)
    vertices = np.empty((len(lines), 3), dtype=np.float64)
    for k, (lineno, tokens) in enumerate(lines):
        if len(tokens) < 3:
            raise DataError(
                f"{label}: line {lineno}: vertex {k} has {len(tokens)} coordinates, expected 3 "
                f"(truncated or malformed file)"
            )
        try:
            vertices[k] = [float(t) for t in tokens[:3]]
        except ValueError:
            raise DataError(
                f"{label}: line {lineno}: non-numeric vertex coordinate in {' '.join(tokens)!r}"
            ) from None
    return vertices


_WHITESPACE = np.frombuffer(b" \t\n\r\x0b\x0c", dtype=np.uint8)


def _tokens_per_line(block: str) -> np.ndarray:
    """The number of whitespace-separated tokens on each ``\\n``-separated line of ``block``."""
    b = np.frombuffer(block.encode("latin-1"), dtype=np.uint8)
    newline = b == 10
    space = np.isin(b, _WHITESPACE)
    start = ~space
    start[1:] &= space[:-1]
    line_of = np.cumsum(newline)  # at a token start: the number of line ends before it
    return np.bincount(line_of[start], minlength=int(newline.sum()) + 1)


def _parse_lines_vectorised(body: str, nv: int, nf: int):
    """Vectorised parse that allows blank lines and polygons: ``nv`` lines of exactly three
    floats, then ``nf`` lines of exactly ``k i_1 .. i_k``, fan-triangulated in line order.

    Returns (None, None) on anything else (too few lines, colours, bad tokens), which the
    line-by-line parser then handles or reports.
    """
    body = re.sub(r"(?m)^[ \t\x0b\x0c]*\n", "", body)  # blank lines
    pieces = body.split("\n", nv)
    if len(pieces) <= nv:
        return None, None
    vertex_block = "\n".join(pieces[:nv])
    face_lines = pieces[nv].split("\n", nf)
    if len(face_lines) < nf:
        return None, None
    face_block = "\n".join(face_lines[:nf])
    vertex_lengths, lengths = _tokens_per_line(vertex_block), _tokens_per_line(face_block)
    if not (vertex_lengths == 3).all() or (lengths == 0).any():
        return None, None
    try:  # numpy < 2.3 stops at a bad token with a warning: the lengths below catch that
        values = np.fromstring(vertex_block, dtype=np.float64, sep=" ")
        flat = np.fromstring(face_block, dtype=np.int64, sep=" ")
    except ValueError:
        return None, None
    if len(values) != 3 * nv or len(flat) != lengths.sum():
        return None, None
    offsets = np.cumsum(lengths) - lengths
    counts = flat[offsets]
    if not (counts + 1 == lengths).all():
        return None, None
    tris, keys = [], []
    for k in np.unique(counts[counts >= 3]).tolist():
        rows = np.flatnonzero(counts == k)
        poly = flat[offsets[rows, None] + 1 + np.arange(k)]  # (n, k)
        j = np.arange(1, k - 1)
        first = np.broadcast_to(poly[:, :1], (len(rows), k - 2))
        tris.append(np.stack([first, poly[:, j], poly[:, j + 1]], axis=-1).reshape(-1, 3))
        keys.append((offsets[rows, None] + j).reshape(-1))  # line order, then fan order
    if not tris:
        return values.reshape(nv, 3), np.empty((0, 3), dtype=np.int64)
    order = np.argsort(np.concatenate(keys), kind="stable")
    return values.reshape(nv, 3), np.concatenate(tris)[order]


def _faces_by_line(lines: list[tuple[int, list[str]]], label: str) -> np.ndarray:
    """Parse face lines one by one: colours after the indices are ignored; errors name the line."""
    triangles: list[tuple[int, int, int]] = []
    for k, (lineno, tokens) in enumerate(lines):
        try:
            count = int(tokens[0])
            indices = [int(t) for t in tokens[1 : 1 + count]]
        except ValueError:
            raise DataError(
                f"{label}: line {lineno}: face {k} has a non-integer token in {' '.join(tokens)!r}"
            ) from None
        if len(indices) < count:
            raise DataError(
                f"{label}: line {lineno}: face {k} announces {count} vertices but lists "
                f"{len(indices)} indices (truncated or malformed file)"
            )
        if count >= 3:  # a point or a line segment has no area: skipped
            triangles.extend(_fan(indices))
    return np.array(triangles, dtype=np.int64).reshape(-1, 3)


def _parse_body_slow(body: str, first_line: int, nv: int, nf: int, label: str):
    """Line-by-line parse of the vertex and face lines: blank lines, polygons, colours, and errors
    that name the line."""
    tokens_per_line = map(str.split, body.split("\n"))
    lines = [(first_line + k, tokens) for k, tokens in enumerate(tokens_per_line) if tokens]
    if len(lines) < nv + nf:
        raise DataError(
            f"{label}: truncated: the header announces {nv} vertices and {nf} faces "
            f"({nv + nf} lines), the file has only {len(lines)} non-blank lines after it"
        )
    return _vertices_by_line(lines[:nv], label), _faces_by_line(lines[nv : nv + nf], label)


def _parse_body_fast(body: str, nv: int, nf: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Vectorised parse of the common case: the first ``nv`` lines hold 3 floats each, the rest
    exactly ``nf`` lines ``3 i j k``. Returns (None, None) on anything else (blank lines,
    polygons, colours, bad tokens, trailing data), which the slow path then handles."""
    pieces = body.split("\n", nv)
    if len(pieces) <= nv:
        return None, None
    try:
        values = np.fromstring(" ".join(pieces[:nv]), dtype=np.float64, sep=" ")
        if len(values) != 3 * nv:
            return None, None
        ints = np.fromstring(pieces[nv], dtype=np.int64, sep=" ")
    except ValueError:  # a non-numeric token (numpy >= 2.3; older ones warn and stop early)
        return None, None
    if len(ints) != 4 * nf:
        return None, None
    ints = ints.reshape(nf, 4)
    if not (ints[:, 0] == 3).all():
        return None, None
    return values.reshape(nv, 3), np.ascontiguousarray(ints[:, 1:])


def read_off(source: str | Path | bytes, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read an OFF mesh into vertices and triangles.

    Handles the ModelNet quirks: the counts glued to the header (``OFF3514 3546 0``), CRLF (or CR)
    line ends, ``#`` comments, blank lines, optional face colours, and polygons with more than three
    vertices, which are fan-triangulated ((i0, i1, i2), (i0, i2, i3), ...; for quads the split of
    PyG's ``read_off``, which however drops polygons with five or more vertices). Faces with fewer
    than three vertices are skipped. Lines after the announced faces are ignored. Files without
    errors are parsed with vectorised numpy calls; only files with face colours or errors are
    parsed line by line (and the errors name the line).

    Args:
        source: the file's path, or its content as bytes.
        name: the name used in error messages (default: the path, or ``"<bytes>"``).

    Returns:
        ``(vertices, faces)``: float64 (V, 3) and int64 (F, 3) with 0 <= index < V.

    Raises:
        DataError: the file cannot be read, has no ``OFF`` header, is truncated (fewer vertex or
            face lines than the header announces), has a non-numeric or non-finite value, a face
            index outside 0..V-1, or no face. The message names the file and the problem.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        label = name or "<bytes>"
    else:
        path = Path(source)
        label = name or str(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{label}: cannot read the file ({exc})") from exc
    text = raw.decode("latin-1")  # never fails; non-ASCII bytes then fail as non-numeric tokens
    text = text.removeprefix("\xef\xbb\xbf")  # a UTF-8 byte order mark
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "#" in text:
        text = re.sub(r"#[^\n]*", "", text)

    header, pos = _next_line(text, 0)
    if not header.startswith("OFF"):
        shown = header[:40] if header else "an empty file"
        raise DataError(f"{label}: not an OFF file: missing 'OFF' header (starts with {shown!r})")
    rest = header[3:].split()
    if rest:  # ModelNet40's glued header: 'OFF3514 3546 0'
        nv, nf = _parse_counts(rest, label)
    else:
        counts, pos = _next_line(text, pos)
        if not counts:
            raise DataError(f"{label}: truncated: nothing after the 'OFF' header")
        nv, nf = _parse_counts(counts.split(), label)
    if nf == 0:
        raise DataError(f"{label}: the mesh has no faces (header: {nv} vertices, 0 faces)")
    body = text[pos:]

    vertices, faces = _parse_body_fast(body, nv, nf)
    if vertices is None:
        vertices, faces = _parse_lines_vectorised(body, nv, nf)
    if vertices is None:
        first_line = text.count("\n", 0, pos) + 1
        vertices, faces = _parse_body_slow(body, first_line, nv, nf, label)

    if not np.isfinite(vertices).all():
        bad = int(np.flatnonzero(~np.isfinite(vertices).all(axis=1))[0])
        raise DataError(f"{label}: vertex {bad} has a non-finite coordinate {vertices[bad]}")
    if len(faces) == 0:
        raise DataError(f"{label}: the mesh has no face with three or more vertices")
    if faces.min() < 0 or faces.max() >= nv:
        bad = int(np.flatnonzero(((faces < 0) | (faces >= nv)).any(axis=1))[0])
        raise DataError(
            f"{label}: face index out of range: triangle {bad} {faces[bad].tolist()} refers to a "
            f"vertex outside 0..{nv - 1} (the mesh has {nv} vertices)"
        )
    return vertices, faces


def write_off(
    path: str | Path,
    vertices: np.ndarray,
    faces: np.ndarray | Sequence[Sequence[int]],
    *,
    crlf: bool = False,
    glued_header: bool = False,
    comment: str | None = None,
    precision: int = 6,
) -> None:
    """Write a mesh as an OFF file (not atomically; callers stage it).

    Args:
        path: the file to write.
        vertices: (V, 3) coordinates.
        faces: an int array (F, k) or a sequence of polygons (each a sequence of >= 3 vertex
            indices, 0-based).
        crlf: end lines with ``\\r\\n`` instead of ``\\n``.
        glued_header: write ``OFF<V> <F> 0`` on one line, ModelNet40's quirk.
        comment: a ``#`` comment line written after the counts (None: none).
        precision: digits after the decimal point of the coordinates (fixed-point), so equal
            inputs give byte-identical files.

    Raises:
        ValueError: ``vertices`` is not (V, 3), or a face has fewer than 3 vertices or an index
            outside 0..V-1.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {vertices.shape}")
    polygons = [[int(i) for i in face] for face in faces]
    nv = len(vertices)
    for k, poly in enumerate(polygons):
        if len(poly) < 3 or min(poly) < 0 or max(poly) >= nv:
            raise ValueError(f"face {k} {poly} is invalid for a mesh with {nv} vertices")
    lines = [f"OFF{nv} {len(polygons)} 0"] if glued_header else ["OFF", f"{nv} {len(polygons)} 0"]
    if comment is not None:
        lines.append(f"# {comment}")
    fmt = f"{{:.{precision}f}} {{:.{precision}f}} {{:.{precision}f}}"
    lines.extend(fmt.format(*v) for v in vertices.tolist())
    lines.extend(f"{len(poly)} " + " ".join(map(str, poly)) for poly in polygons)
    newline = "\r\n" if crlf else "\n"
    Path(path).write_bytes((newline.join(lines) + newline).encode("ascii"))


# --------------------------------------------------------------------------------------------
# Normalisation and surface sampling (PyG NormalizeScale and SamplePoints)
# --------------------------------------------------------------------------------------------


def normalize_mesh(vertices: np.ndarray) -> np.ndarray:
    """Centre vertices on their mean and scale them into [-1, 1]^3 (PyG ``NormalizeScale``).

    ``v -> (v - mean(v)) * 0.999999 / max|v - mean(v)|``, the max over all vertices and axes, so
    the largest absolute coordinate becomes 0.999999. It works on the mesh vertices, not on
    sampled points, exactly like the authors' pre-transform. A degenerate mesh whose vertices all
    coincide is only centred (scale 1): it has no area, and :func:`sample_points` rejects it.

    Args:
        vertices: (V, 3) coordinates.

    Returns:
        A new float64 (V, 3) array.
    """
    v = np.asarray(vertices, dtype=np.float64)
    v = v - v.mean(axis=0)
    extent = np.abs(v).max() if v.size else 0.0
    if extent > 0:
        v *= NORMALIZE_SCALE / extent
    return v


def sample_points(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Sample ``n`` points uniformly on the surface of a triangle mesh (PyG ``SamplePoints``).

    Faces are drawn with replacement, with probability proportional to their area (by inverse
    CDF: one ``rng.random(n)`` draw, zero-area faces are never drawn); then one point per drawn
    face from ``rng.random((n, 2))`` = (u, v), folded to (1 - u, 1 - v) where u + v > 1, as
    ``v0 + u (v1 - v0) + v (v2 - v0)``. No normals are computed.

    Args:
        vertices: (V, 3) coordinates.
        faces: (F, 3) vertex indices.
        n: number of points, >= 1.
        rng: the generator; equal states give equal points.

    Returns:
        float32 (n, 3).

    Raises:
        DataError: the total surface area is zero or not finite.
        ValueError: ``n`` < 1 or ``faces`` is not (F, 3).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {f.shape}")
    v0, v1, v2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    e1, e2 = v1 - v0, v2 - v0
    area = 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)
    cdf = np.cumsum(area)
    total = cdf[-1] if len(cdf) else 0.0
    if not np.isfinite(total) or total <= 0:
        raise DataError(
            f"the mesh has total surface area {total} ({len(f)} faces); cannot sample points on it"
        )
    chosen = np.searchsorted(cdf, rng.random(n) * total, side="right")
    np.minimum(chosen, len(f) - 1, out=chosen)  # guards the float edge u * total == total
    uv = rng.random((n, 2))
    fold = uv.sum(axis=1) > 1.0
    uv[fold] = 1.0 - uv[fold]
    points = v0[chosen] + uv[:, :1] * e1[chosen] + uv[:, 1:] * e2[chosen]
    return points.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Listing the meshes of a zip or a tree
# --------------------------------------------------------------------------------------------


def _is_hidden(part: str) -> bool:
    return part.startswith(".") or part in _IGNORED_DIRS


def _class_dirs(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` that hold a ``train`` or ``test`` folder (the class folders)."""
    if not folder.is_dir():
        return []
    return sorted(
        (
            d
            for d in folder.iterdir()
            if d.is_dir()
            and not _is_hidden(d.name)
            and any((d / split).is_dir() for split in SPLITS)
        ),
        key=lambda d: d.name,
    )


def _tree_root(folder: Path) -> Path | None:
    """The folder that holds the class folders: ``folder`` itself, or its single sub-folder
    (e.g. ``ModelNet40/``, next to an ignored ``__MACOSX/``). None if neither holds any."""
    if _class_dirs(folder):
        return folder
    if not folder.is_dir():
        return None
    subdirs = [d for d in folder.iterdir() if d.is_dir() and not _is_hidden(d.name)]
    if len(subdirs) == 1 and _class_dirs(subdirs[0]):
        return subdirs[0]
    return None


def _is_off(name: str) -> bool:
    return name.lower().endswith(".off") and not _is_hidden(name)


def _list_tree(source: Path) -> dict[str, dict[str, list[str]]]:
    root = _tree_root(source)
    if root is None:
        raise DataError(
            f"{source}: no ModelNet class folder found (expected <class>/train/*.off and "
            f"<class>/test/*.off here or in a single sub-folder such as ModelNet40/)"
        )
    found: dict[str, dict[str, list[str]]] = {}
    for cls_dir in _class_dirs(root):
        found[cls_dir.name] = {}
        for split in SPLITS:
            split_dir = cls_dir / split
            names = (
                sorted(p.name for p in split_dir.iterdir() if p.is_file() and _is_off(p.name))
                if split_dir.is_dir()
                else []
            )
            prefix = (split_dir.relative_to(source)).as_posix()
            found[cls_dir.name][split] = [f"{prefix}/{n}" for n in names]
    return found


def _list_zip(source: Path) -> dict[str, dict[str, list[str]]]:
    try:
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{source}: cannot open the zip file ({exc})") from exc
    found: dict[str, dict[str, list[str]]] = {}
    prefixes: set[tuple[str, ...]] = set()
    for member in names:
        parts = member.split("/")
        if (
            len(parts) < 3
            or any(_is_hidden(p) for p in parts)
            or not _is_off(parts[-1])
            or parts[-2] not in SPLITS
        ):
            continue
        prefixes.add(tuple(parts[:-3]))
        found.setdefault(parts[-3], {s: [] for s in SPLITS})[parts[-2]].append(member)
    if len(prefixes) > 1:
        shown = sorted("/".join(p) + "/" for p in prefixes)
        raise DataError(
            f"{source}: the zip holds meshes under several top folders {shown}; expected one "
            "(e.g. ModelNet40/)"
        )
    for splits in found.values():
        for members in splits.values():
            members.sort(key=lambda m: m.rsplit("/", 1)[-1])
    return found


def list_meshes(source: str | Path) -> tuple[list[str], dict[str, list[tuple[int, str]]]]:
    """List the meshes of a ModelNet zip or extracted tree, with their labels.

    Args:
        source: ``ModelNet40.zip`` (members ``ModelNet40/<class>/<split>/<file>.off``), or a
            folder: the tree root holding the class folders, or a folder whose single sub-folder
            (e.g. ``ModelNet40/``) is that root. ``__MACOSX/`` and dot-files are ignored.

    Returns:
        ``(classes, {"train": [(label, member), ...], "test": [...]})``: the class names sorted
        alphabetically (label = index), and per split the meshes ordered by label, then by file
        name. ``member`` is the zip member name, or the path relative to ``source`` (posix).

    Raises:
        DataError: ``source`` does not exist, no class folder or OFF file is found, a class folder
            holds no OFF file, or the train split is empty (the message names ``source``). A class
            with test meshes but no train mesh is only logged as a warning (the real sample has
            one: chair, with a single test mesh).
    """
    source = Path(source)
    if source.is_dir():
        found = _list_tree(source)
    elif source.is_file():
        found = _list_zip(source)
    else:
        raise DataError(f"{source}: no such file or folder (expected ModelNet40.zip or its tree)")
    if not found:
        raise DataError(
            f"{source}: no ModelNet mesh found (expected <class>/train/*.off and "
            f"<class>/test/*.off, e.g. ModelNet40/airplane/train/airplane_0001.off)"
        )
    classes = sorted(found)
    meshes: dict[str, list[tuple[int, str]]] = {split: [] for split in SPLITS}
    for label, cls in enumerate(classes):
        if not found[cls]["train"] and not found[cls]["test"]:
            raise DataError(f"{source}: class folder {cls!r} holds no .off file")
        if not found[cls]["train"]:
            logger.warning("%s: class %r has no train mesh (only test ones)", source, cls)
        for split in SPLITS:
            meshes[split].extend((label, member) for member in found[cls][split])
    if not meshes["train"]:
        raise DataError(f"{source}: no train mesh found in any of the {len(classes)} classes")
    return classes, meshes


# --------------------------------------------------------------------------------------------
# Preprocessing: meshes -> fixed point clouds
# --------------------------------------------------------------------------------------------


def mesh_key(member: str) -> str:
    """The source-independent key ``<class>/<split>/<file>`` of a member path."""
    return "/".join(PurePosixPath(member).parts[-3:])


def _key_words(text: str) -> list[int]:
    """Eight uint32 words of the sha256 of ``text`` (a stable hash, unlike Python's ``hash``)."""
    return np.frombuffer(hashlib.sha256(text.encode("utf-8")).digest(), dtype="<u4").tolist()


def mesh_rng(seed: int, member: str) -> np.random.Generator:
    """The point-sampling generator of one mesh: seeded with ``seed`` and :func:`mesh_key`'s sha256.

    Only the last three path parts count, so the zip member
    ``ModelNet40/airplane/train/airplane_0001.off`` and the tree path
    ``airplane/train/airplane_0001.off`` get the same points.
    """
    return np.random.default_rng([int(seed), *_key_words(mesh_key(member))])


class _MeshReader:
    """Reads member bytes from a zip (opened lazily, once per process) or a folder."""

    def __init__(self, source: str, is_zip: bool):
        self.source = source
        self.is_zip = is_zip
        self._zip: zipfile.ZipFile | None = None

    def read(self, member: str) -> bytes:
        if self.is_zip:
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.source)
            return self._zip.read(member)
        return (Path(self.source) / member).read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


def _process_mesh(reader: _MeshReader, member: str, num_points: int, seed: int) -> np.ndarray:
    """read_off -> normalize_mesh -> sample_points for one member; errors name it and the source."""
    try:
        vertices, faces = read_off(reader.read(member), name=member)
        return sample_points(normalize_mesh(vertices), faces, num_points, mesh_rng(seed, member))
    except DataError as exc:
        message = str(exc) if str(exc).startswith(member) else f"{member}: {exc}"
        raise DataError(f"{message} (mesh in {reader.source})") from None
    except Exception as exc:  # noqa: BLE001 (OSError, BadZipFile, zlib.error, ...): name the mesh
        raise DataError(
            f"{member}: cannot read the mesh from {reader.source}: {type(exc).__name__}: {exc}"
        ) from None


# Per worker process: set by _init_worker, used by _worker_task.
_WORKER: dict[str, Any] = {}


def _init_worker(source: str, is_zip: bool, num_points: int, seed: int) -> None:
    _WORKER.update(reader=_MeshReader(source, is_zip), num_points=num_points, seed=seed)


def _worker_task(member: str) -> np.ndarray:
    return _process_mesh(_WORKER["reader"], member, _WORKER["num_points"], _WORKER["seed"])


def prepare_modelnet(
    source: str | Path, num_points: int, seed: int, processes: int = 1
) -> dict[str, Any]:
    """Turn every mesh of a ModelNet zip or tree into a fixed point cloud.

    Per mesh: :func:`read_off` -> :func:`normalize_mesh` -> :func:`sample_points` with the
    generator :func:`mesh_rng` ``(seed, member)``. The result does not depend on ``processes``, on
    the order of the work, or on whether ``source`` is the zip or its extracted tree. Meshes are
    streamed (read, sampled and dropped one at a time); only the output arrays are kept.

    Args:
        source: the zip or folder, as accepted by :func:`list_meshes`.
        num_points: points per mesh, >= 1 (the paper: 1000).
        seed: the sampling seed, >= 0.
        processes: worker processes (>= 1); each opens the zip itself.

    Returns:
        ``{"train": (x, y), "test": (x, y), "classes": [names]}`` with x float32
        (N, num_points, 3) in [-1, 1] and y int64 (N,) the class indices into ``classes``.

    Raises:
        DataError: from :func:`list_meshes`, or a mesh cannot be read or sampled (the message names
            the member and the source).
        ValueError: an argument is out of range.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    source = Path(source)
    classes, meshes = list_meshes(source)
    is_zip = not source.is_dir()
    total = sum(len(m) for m in meshes.values())
    logger.info(
        "ModelNet: sampling %d points on %d meshes (%d train, %d test, %d classes) from %s with %d "
        "process(es)",
        num_points, total, len(meshes["train"]), len(meshes["test"]), len(classes), source,
        processes,
    )  # fmt: skip
    result: dict[str, Any] = {"classes": list(classes)}
    outputs = {}
    for split in SPLITS:
        n = len(meshes[split])
        outputs[split] = (
            np.empty((n, num_points, 3), dtype=np.float32),
            np.array([label for label, _ in meshes[split]], dtype=np.int64),
        )
    order = [(split, i, member) for split in SPLITS for i, (_, member) in enumerate(meshes[split])]
    members = [member for _, _, member in order]

    with contextlib.ExitStack() as stack:
        if processes == 1 or total < 2:
            reader = _MeshReader(str(source), is_zip)
            stack.callback(reader.close)
            results: Iterator[np.ndarray] = (
                _process_mesh(reader, m, num_points, seed) for m in members
            )
        else:
            workers = min(processes, total)
            pool = stack.enter_context(
                multiprocessing.Pool(
                    workers, initializer=_init_worker,
                    initargs=(str(source), is_zip, num_points, seed),
                )
            )  # fmt: skip
            chunksize = max(1, min(32, total // (workers * 8)))
            results = pool.imap(_worker_task, members, chunksize=chunksize)
        for done, ((split, i, _), points) in enumerate(zip(order, results), start=1):
            outputs[split][0][i] = points
            if done % _PROGRESS_EVERY == 0 or done == total:
                logger.info("ModelNet: %d of %d meshes sampled", done, total)
    result.update(outputs)
    return result


# --------------------------------------------------------------------------------------------
# Sources "download" and "local"
# --------------------------------------------------------------------------------------------


def download_modelnet(
    url: str,
    dest_dir: str | Path,
    retries: int,
    timeout_s: float = 60.0,
    backoff_s: float = 2.0,
) -> Path:
    """Download ``ModelNet40.zip`` into ``dest_dir`` (resumable; size and md5 checked).

    Args:
        url: the zip's URL (:data:`MODELNET40_URL` or a mirror; ``file://`` works too).
        dest_dir: the folder that receives ``ModelNet40.zip``; a ``.part`` file is kept there
            between attempts and runs. An existing zip with the right md5 is not fetched again.
        retries: attempts in all, >= 1.
        timeout_s: socket timeout of each connection and read, seconds.
        backoff_s: base of the exponential back-off between attempts, seconds.

    Returns:
        The path of the verified zip.

    Raises:
        DownloadError, ChecksumError: see :func:`kdinv.data.download.fetch_file`.
    """
    # the module attributes are read at call time so that tests can monkeypatch them
    return fetch_file(
        url,
        Path(dest_dir) / MODELNET40_ZIP_NAME,
        md5=MODELNET40_MD5,
        size=MODELNET40_SIZE,
        retries=retries,
        backoff_s=backoff_s,
        timeout_s=timeout_s,
    )


def resolve_local_modelnet(local_dir: str | Path) -> Path:
    """Find the ModelNet data the user already has (the ``local`` source).

    Args:
        local_dir: the zip file itself, a folder holding ``ModelNet40.zip`` (preferred when the
            folder also holds an extracted tree), or an extracted tree (the folder holding the
            class folders, or one whose single sub-folder such as ``ModelNet40/`` holds them).

    Returns:
        What :func:`list_meshes` should read: the zip, or the folder holding the class folders.
        The zip's checksum is not verified here.

    Raises:
        DataError: nothing usable is found (the message names ``local_dir``).
    """
    local = Path(local_dir)
    if local.is_file():
        if not zipfile.is_zipfile(local):
            raise DataError(f"{local}: not a zip file (expected ModelNet40.zip)")
        return local
    if local.is_dir():
        candidate = local / MODELNET40_ZIP_NAME
        if candidate.is_file():
            return candidate
        root = _tree_root(local)
        if root is not None:
            return root
        raise DataError(
            f"{local}: holds neither {MODELNET40_ZIP_NAME} nor an extracted ModelNet tree "
            f"(<class>/train/*.off, here or in a single sub-folder such as ModelNet40/)"
        )
    raise DataError(f"{local}: no such file or folder (the local ModelNet40 data)")


# --------------------------------------------------------------------------------------------
# Source "offline": a seeded generator of parametric shapes
# --------------------------------------------------------------------------------------------


def fetch_modelnet(spec: dict, raw: Path) -> Path:
    """Rule fetch_modelnet40's job: the meshes from the configured source (``spec``: ``source``
    and the keys it reads, :mod:`kdinv.data.kinds`), the zip or generated tree kept in ``raw``.
    Returns where they are: the zip, or the folder of the class folders."""
    if spec["source"] == "download":
        return download_modelnet(spec["url"], raw, retries=3)
    if spec["source"] == "local":
        return resolve_local_modelnet(spec["local_dir"])
    from kdinv.data.offline.modelnet import write_offline_modelnet

    source = raw / "ModelNet40"
    write_offline_modelnet(
        source,
        seed=spec["seed"],
        train_per_class=spec["offline_train_per_class"],
        test_per_class=spec["offline_test_per_class"],
    )
    return source


def write_modelnet_splits(source: Path, outputs: dict[str, str], processes: int, num_points: int, seed: int) -> None:
    """Rule prepare_modelnet40's job: the meshes at ``source`` -> normalised point clouds of
    ``num_points`` points (:func:`prepare_modelnet`, in ``processes`` processes), the split files
    ``outputs`` (by split)."""
    from kdinv.data.splits import save_split

    logger.info("sampling %d points per mesh of %s with %d processes", num_points, source, processes)
    data = prepare_modelnet(source, num_points, seed, processes=processes)
    classes = data["classes"]
    for split in SPLITS:
        x, y = data[split]
        save_split(x, y, len(classes), outputs[split], classes=list(classes))
        logger.info("%s: %s points, %d classes", split, x.shape, len(classes))
