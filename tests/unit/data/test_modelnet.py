"""Tests of kdinv.data.modelnet (and its offline generator): OFF reading, normalisation, surface
sampling, the offline generator, listing and preprocessing from a tree or a zip, and the download / local sources.

Real-mesh tests read the 15 real ModelNet meshes of the folder named by the environment variable
``KDINV_MODELNET_SAMPLE_DIR`` (``.../modelnet40-sample/raw``) and are skipped when it is unset.
Download tests run against a local HTTP server on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_server import FileServer

from kdinv.data import modelnet
from kdinv.data.download import ChecksumError, DataError
from kdinv.data.modelnet import (
    MODELNET40_CLASSES,
    download_modelnet,
    list_meshes,
    mesh_rng,
    normalize_mesh,
    prepare_modelnet,
    read_off,
    resolve_local_modelnet,
    sample_points,
    write_off,
)
from kdinv.data.offline import modelnet as offline_modelnet
from kdinv.data.offline.modelnet import OFFLINE_CLASSES, write_offline_modelnet

SAMPLE_ENV = "KDINV_MODELNET_SAMPLE_DIR"
TETRA_V = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def tree_files(folder: Path) -> dict[str, bytes]:
    """Relative path -> content of every file below ``folder``."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def zip_tree(folder: Path, zip_path: Path, prefix: str = "ModelNet40/", junk: bool = True) -> Path:
    """Zip ``folder`` with every member under ``prefix``, plus macOS junk that must be ignored."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(prefix, b"")
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).as_posix()
            if p.is_dir():
                zf.writestr(f"{prefix}{rel}/", b"")
            else:
                zf.write(p, f"{prefix}{rel}")
                if junk:
                    zf.writestr(f"__MACOSX/{prefix}{rel}", b"\x00\x05\x16\x07 junk")
        if junk:
            zf.writestr(f"{prefix}.DS_Store", b"junk")
    return zip_path


def on_surface(
    points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, tol: float
) -> np.ndarray:
    """For each point: does it lie on some triangle (plane distance and barycentric coordinates
    within ``tol``)?"""
    p = points.astype(np.float64)[:, None, :]  # (n, 1, 3)
    a, b, c = (vertices[faces[:, k]][None] for k in range(3))  # (1, F, 3)
    e1, e2 = b - a, c - a
    normal = np.cross(e1, e2)
    norm = np.linalg.norm(normal, axis=-1)
    ok_face = norm > 1e-12
    normal = normal / np.where(ok_face, norm, 1.0)[..., None]
    d = p - a
    plane = np.abs((d * normal).sum(-1))
    # barycentric coordinates of the projection
    d00, d01, d11 = (e1 * e1).sum(-1), (e1 * e2).sum(-1), (e2 * e2).sum(-1)
    d20, d21 = (d * e1).sum(-1), (d * e2).sum(-1)
    den = np.where(ok_face, d00 * d11 - d01 * d01, 1.0)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    u = 1.0 - v - w
    inside = (u >= -tol) & (v >= -tol) & (w >= -tol)
    return ((plane <= tol) & inside & ok_face).any(axis=1)


@pytest.fixture(scope="module")
def offline_tree(tmp_path_factory) -> Path:
    """A small offline tree: every class, 4 train + 2 test meshes each."""
    dest = tmp_path_factory.mktemp("offline") / "ModelNet40"
    write_offline_modelnet(dest, seed=7, train_per_class=4, test_per_class=2)
    return dest


@pytest.fixture(scope="module")
def sample_dir() -> Path:
    value = os.environ.get(SAMPLE_ENV)
    if not value:
        pytest.skip(
            f"{SAMPLE_ENV} is not set: point it at the real ModelNet sample "
            "(.../shared/data/modelnet40-sample/raw) to run the real-mesh tests"
        )
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"{SAMPLE_ENV}={value} is not a folder")
    return path


# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------


def test_class_names_are_the_40_modelnet_classes_in_label_order():
    assert len(MODELNET40_CLASSES) == 40
    assert list(MODELNET40_CLASSES) == sorted(set(MODELNET40_CLASSES))
    assert MODELNET40_CLASSES[0] == "airplane"
    assert MODELNET40_CLASSES[8] == "chair"
    assert MODELNET40_CLASSES[15] == "flower_pot"
    assert MODELNET40_CLASSES[32] == "stool"
    assert MODELNET40_CLASSES[-1] == "xbox"
    assert modelnet.MODELNET40_URL == "http://modelnet.cs.princeton.edu/ModelNet40.zip"
    assert re.fullmatch(r"[0-9a-f]{32}", modelnet.MODELNET40_MD5)


# --------------------------------------------------------------------------------------------
# read_off / write_off
# --------------------------------------------------------------------------------------------

QUAD_OFF = b"""OFF
5 2 0
0 0 0
1 0 0
1 1 0
0 1 0
0.5 0.5 1
4 0 1 2 3
3 0 1 4
"""


def test_write_then_read_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(10, 3)) * 100
    f = rng.integers(0, 10, size=(7, 3))
    write_off(tmp_path / "m.off", v, f)
    text = (tmp_path / "m.off").read_bytes()
    assert text.startswith(b"OFF\n10 7 0\n")
    v2, f2 = read_off(tmp_path / "m.off")
    assert v2.dtype == np.float64 and f2.dtype == np.int64
    np.testing.assert_allclose(v2, v, atol=1e-6)
    np.testing.assert_array_equal(f2, f)


def test_glued_header_crlf_and_comment_parse_like_the_plain_file(tmp_path):
    v = TETRA_V * 3 - 1
    write_off(tmp_path / "plain.off", v, TETRA_F)
    write_off(tmp_path / "glued.off", v, TETRA_F, glued_header=True, crlf=True, comment="hi")
    raw = (tmp_path / "glued.off").read_bytes()
    assert raw.startswith(b"OFF4 4 0\r\n# hi\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    plain = read_off(tmp_path / "plain.off")
    for a, b in zip(plain, read_off(tmp_path / "glued.off")):
        np.testing.assert_array_equal(a, b)


def test_cr_only_line_ends():
    v, f = read_off(QUAD_OFF.replace(b"\n", b"\r"))
    assert v.shape == (5, 3) and f.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 4]]


def test_modelnet40_style_glued_header_literal():
    v, f = read_off(b"OFF3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", name="bathtub_0107.off")
    assert v.shape == (3, 3) and f.tolist() == [[0, 1, 2]]


def test_quads_and_polygons_are_fan_triangulated():
    v, f = read_off(QUAD_OFF)
    assert v.shape == (5, 3)
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 4]]
    pentagon = b"OFF\n5 1 0\n" + b"0 0 0\n" * 5 + b"5 4 3 2 1 0\n"
    assert read_off(pentagon)[1].tolist() == [[4, 3, 2], [4, 2, 1], [4, 1, 0]]


def test_mixed_polygons_whose_token_count_looks_like_all_triangles():
    # 8 face tokens = 4 x 2 faces, as if both were triangles: the vectorised path must not be fooled
    _, f = read_off(b"OFF\n4 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n2 0 1\n")
    assert f.tolist() == [[0, 1, 2], [0, 2, 3]]


def test_comments_blank_lines_colours_and_bom():
    text = (
        b"\xef\xbb\xbf# a comment before the header\n\nOFF # trailing comment\n\n"
        b"4 2 0\n0 0 0 # vertex comment\n\n1 0 0\n0 1 0\n0 0 1\n"
        b"3 0 1 2 255 0 0\n"  # an RGB colour after the indices
        b"3 0 1 3 0.5 0.5 0.5 1.0\n"
        b"trailing junk is ignored\n"
    )
    v, f = read_off(text)
    np.testing.assert_array_equal(v, TETRA_V)
    assert f.tolist() == [[0, 1, 2], [0, 1, 3]]


def test_faces_with_fewer_than_three_vertices_are_skipped():
    _, f = read_off(b"OFF\n3 3 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n1 2\n3 0 1 2\n")
    assert f.tolist() == [[0, 1, 2]]


def test_the_three_parser_paths_agree(offline_tree):
    """Plain triangle files take the vectorised path, blank lines or polygons the vectorised
    line-aware one, and a colour after the indices the line-by-line parser: same result."""
    paths = sorted(offline_tree.rglob("*_0001.off"))
    assert any(b"\n4 " in p.read_bytes() for p in paths)  # quads among them
    for path in paths:
        raw = path.read_bytes()
        eol = b"\r\n" if b"\r\n" in raw else b"\n"
        lines = raw.split(eol)
        blank = eol.join(lines[:4] + [b"   "] + lines[4:])
        colour = eol.join(lines[:-2] + [lines[-2] + b" 0.5 0.5 0.5", b""])
        ref_v, ref_f = read_off(raw)
        for variant in (blank, colour):
            v, f = read_off(variant)
            np.testing.assert_array_equal(v, ref_v)
            np.testing.assert_array_equal(f, ref_f)
    # the polygon order is kept: triangles of face k come before those of face k + 1
    text = b"OFF\n6 3 0\n" + b"0 0 0\n" * 6 + b"3 0 1 2\n5 5 4 3 2 1\n4 0 2 4 5\n"
    expected = [[0, 1, 2], [5, 4, 3], [5, 3, 2], [5, 2, 1], [0, 2, 4], [0, 4, 5]]
    assert read_off(text)[1].tolist() == expected
    assert read_off(text.replace(b"4 5\n", b"4 5 255 0 0\n"))[1].tolist() == expected


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "missing 'OFF' header"),
        (b"PLY\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "missing 'OFF' header"),
        (b"OFF\n", "truncated"),
        (b"OFF\n3 1 0\n0 0 0\n1 0 0\n", "truncated"),  # a vertex and the face missing
        (b"OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "truncated"),  # a face missing
        (b"OFF\n3 1 0\n0 0 0\n1 0\n0 1 0\n3 0 1 2\n", "truncated"),  # short vertex line
        (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1\n", "announces 3 vertices but lists 2"),
        (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n", "face index out of range"),
        (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 -1 2\n", "face index out of range"),
        (b"OFF\n3 1 0\n0 0 0\n1 x 0\n0 1 0\n3 0 1 2\n", "line 4: non-numeric"),
        (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 b\n", "line 6: face 0 has a non-integer"),
        (b"OFF\n3 1 0\n0 0 0\n1 nan 0\n0 1 0\n3 0 1 2\n", "non-finite"),
        (b"OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n", "no faces"),
        (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n", "no face with three"),
        (b"OFF\nthree 1 0\n", "not integers"),
        (b"OFF 3\n", "malformed OFF header"),
    ],
)
def test_malformed_files_raise_data_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "broken_0001.off"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(problem)) as info:
        read_off(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match=r"^chair/test/x\.off: "):
        read_off(content, name="chair/test/x.off")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.off: cannot read"):
        read_off(tmp_path / "nope.off")


def test_write_off_rejects_bad_faces(tmp_path):
    with pytest.raises(ValueError, match="face 0"):
        write_off(tmp_path / "x.off", TETRA_V, [[0, 1, 4]])
    with pytest.raises(ValueError, match="shape"):
        write_off(tmp_path / "x.off", TETRA_V[:, :2], TETRA_F)


# --------------------------------------------------------------------------------------------
# normalize_mesh / sample_points
# --------------------------------------------------------------------------------------------


def test_normalize_mesh_centres_and_scales():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(50, 3)) * [3.0, 10.0, 0.5] + [100.0, -20.0, 7.0]
    out = normalize_mesh(v)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    assert np.abs(out).max() == pytest.approx(0.999999, abs=1e-12)
    assert np.abs(out).max() <= 1.0
    # invariant to a positive scale and a shift of the input; the input is untouched
    np.testing.assert_allclose(normalize_mesh(v * 42.0 - 5.0), out, atol=1e-12)
    assert v[0, 0] != out[0, 0]
    # PyG: Center (subtract the mean) then scale by 0.999999 / max |coordinate|
    centred = v - v.mean(axis=0)
    np.testing.assert_allclose(out, centred * (0.999999 / np.abs(centred).max()), rtol=1e-12)


def test_normalize_degenerate_mesh_is_only_centred():
    out = normalize_mesh(np.full((4, 3), 5.0))
    np.testing.assert_array_equal(out, np.zeros((4, 3)))


def test_sampled_points_lie_on_a_tetrahedron_and_a_box(tmp_path):
    rng = np.random.default_rng(0)
    pts = sample_points(TETRA_V, TETRA_F, 2000, rng)
    assert pts.dtype == np.float32 and pts.shape == (2000, 3)
    assert on_surface(pts, TETRA_V, TETRA_F, 1e-6).all()
    # every face is hit (areas 0.5, 0.5, 0.5, 0.866)
    assert (pts.min(axis=0) < 1e-6).all()
    # a box read from quads: every point is on the boundary
    box = offline_modelnet._make_box(np.random.default_rng(3))
    write_off(tmp_path / "box.off", *box)
    v, f = read_off(tmp_path / "box.off")
    pts = sample_points(v, f, 3000, rng).astype(np.float64)
    half = np.abs(v).max(axis=0)
    assert (np.abs(pts) <= half + 1e-6).all()
    assert (np.isclose(np.abs(pts), half, atol=1e-6).any(axis=1)).all()
    assert on_surface(pts, v, f, 1e-6).all()
    # ... and not on a slightly bigger box
    assert not on_surface(pts, v * 1.01, f, 1e-6).any()


def test_face_probability_is_proportional_to_area():
    # triangle 0 (z = 0) has area 1, triangle 1 (z = 1) area 3; a zero-area face is never drawn
    v = np.array(
        [[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 1], [2, 0, 1], [0, 3, 1], [5, 5, 5], [6, 6, 6]],
        dtype=float,
    )
    f = np.array([[6, 7, 6], [0, 1, 2], [3, 4, 5], [7, 6, 7]])
    n = 20000
    pts = sample_points(v, f, n, np.random.default_rng(123))
    on_first = pts[:, 2] == 0
    assert ((pts[:, 2] == 0) | (pts[:, 2] == 1)).all()
    share = on_first.mean()
    sd = np.sqrt(0.25 * 0.75 / n)
    assert abs(share - 0.25) < 5 * sd, share
    # uniform in each triangle: the mean is the centroid, and everything lies inside
    np.testing.assert_allclose(pts[on_first, :2].mean(axis=0), [1 / 3, 2 / 3], atol=0.02)
    np.testing.assert_allclose(pts[~on_first, :2].mean(axis=0), [2 / 3, 1.0], atol=0.02)
    assert on_surface(pts[:500], v, f[1:3], 1e-6).all()


def test_sampling_is_reproducible_and_checks_its_input():
    a = sample_points(TETRA_V, TETRA_F, 100, np.random.default_rng(5))
    b = sample_points(TETRA_V, TETRA_F, 100, np.random.default_rng(5))
    c = sample_points(TETRA_V, TETRA_F, 100, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    flat = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]], dtype=float)
    with pytest.raises(DataError, match="area"):
        sample_points(flat, np.array([[0, 1, 2]]), 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n must be"):
        sample_points(TETRA_V, TETRA_F, 0, np.random.default_rng(0))


def test_mesh_rng_depends_on_seed_and_class_split_file_only():
    x = mesh_rng(0, "ModelNet40/chair/train/chair_0001.off").random(4)
    np.testing.assert_array_equal(x, mesh_rng(0, "chair/train/chair_0001.off").random(4))
    assert not np.array_equal(x, mesh_rng(1, "chair/train/chair_0001.off").random(4))
    assert not np.array_equal(x, mesh_rng(0, "chair/test/chair_0001.off").random(4))
    assert not np.array_equal(x, mesh_rng(0, "chair/train/chair_0002.off").random(4))


# --------------------------------------------------------------------------------------------
# The offline generator
# --------------------------------------------------------------------------------------------


def test_offline_layout_and_quirks(offline_tree):
    files = tree_files(offline_tree)
    expected = {
        f"{cls}/{split}/{cls}_{k:04d}.off"
        for cls in OFFLINE_CLASSES
        for split, ks in (("train", range(1, 5)), ("test", range(5, 7)))
        for k in ks
    }
    assert set(files) == expected
    assert set(OFFLINE_CLASSES) >= {"sphere", "box", "cylinder", "cone", "torus"}
    # nothing left next to the tree
    assert [p.name for p in offline_tree.parent.iterdir()] == ["ModelNet40"]
    raws = list(files.values())
    assert any(r.startswith(b"OFF\n") for r in raws)
    assert any(re.match(rb"OFF\d+ \d+ 0\r?\n", r) for r in raws)  # glued header
    assert any(b"\r\n" in r for r in raws) and any(b"\r\n" not in r for r in raws)
    face_sizes = {
        int(line.split()[0])
        for r in raws
        for line in r.replace(b"\r\n", b"\n").split(b"\n")
        if re.fullmatch(rb"\d+( \d+){3,}", line)
    }
    assert 4 in face_sizes and max(face_sizes) >= 10  # quads and big polygons (cylinder caps)
    assert any(b"\n#" in r for r in write_many_for_comments(offline_tree.parent))


def write_many_for_comments(folder: Path) -> list[bytes]:
    """~10% of the files carry a comment: 8 classes x 10 files make one all but certain."""
    dest = folder / "comments"
    write_offline_modelnet(dest, seed=1, train_per_class=10, test_per_class=0)
    out = list(tree_files(dest).values())
    shutil.rmtree(dest)
    return out


def test_offline_meshes_parse_are_small_and_points_lie_on_them(offline_tree):
    for path in sorted(offline_tree.rglob("*.off")):
        v, f = read_off(path)
        assert 4 <= len(f) <= 1000, path
        assert np.abs(v).max() > 1.5 or np.abs(v.mean(axis=0)).max() > 0.5  # not normalised yet
        if path.name.endswith("_0001.off"):
            nv = normalize_mesh(v)
            pts = sample_points(nv, f, 300, np.random.default_rng(0))
            assert on_surface(pts, nv, f, 1e-5).all(), path


def test_offline_is_deterministic(tmp_path, offline_tree):
    write_offline_modelnet(tmp_path / "a", seed=7, train_per_class=4, test_per_class=2)
    assert tree_files(tmp_path / "a") == tree_files(offline_tree)
    write_offline_modelnet(tmp_path / "b", seed=8, train_per_class=4, test_per_class=2)
    a, b = tree_files(tmp_path / "a"), tree_files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a)
    # a subset of classes gives the same files for those classes
    write_offline_modelnet(tmp_path / "c", 7, 4, 2, classes=("torus", "box"))
    c = tree_files(tmp_path / "c")
    assert c == {k: a[k] for k in a if k.split("/")[0] in ("torus", "box")}


def test_offline_replaces_an_existing_tree_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    dest = tmp_path / "out" / "ModelNet40"
    write_offline_modelnet(dest, seed=1, train_per_class=2, test_per_class=1, classes=["cone"])
    (dest / "stale.txt").write_text("old")
    write_offline_modelnet(dest, seed=2, train_per_class=1, test_per_class=0, classes=["sphere"])
    assert set(tree_files(dest)) == {"sphere/train/sphere_0001.off"}
    assert [p.name for p in dest.parent.iterdir()] == ["ModelNet40"]

    calls = []

    def failing_write_off(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return write_off(*args, **kwargs)

    monkeypatch.setattr(offline_modelnet, "write_off", failing_write_off)
    with pytest.raises(OSError, match="disk full"):
        write_offline_modelnet(tmp_path / "new" / "t", seed=0, train_per_class=5, test_per_class=0)
    assert list((tmp_path / "new").iterdir()) == []
    with pytest.raises(OSError, match="disk full"):
        calls.clear()
        write_offline_modelnet(dest, seed=0, train_per_class=5, test_per_class=0)
    assert set(tree_files(dest)) == {"sphere/train/sphere_0001.off"}  # the old tree survives
    assert [p.name for p in dest.parent.iterdir()] == ["ModelNet40"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"classes": ["sphere", "dodecahedron"]},
        {"classes": ["sphere", "sphere"]},
        {"classes": []},
        {"train_per_class": 0},
        {"test_per_class": -1},
        {"seed": -1},
    ],
)
def test_offline_rejects_bad_arguments(tmp_path, kwargs):
    args = {"seed": 0, "train_per_class": 1, "test_per_class": 1} | kwargs
    with pytest.raises(ValueError):
        write_offline_modelnet(tmp_path / "x", **args)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# list_meshes / prepare_modelnet
# --------------------------------------------------------------------------------------------


def test_list_meshes_of_a_tree(offline_tree):
    classes, meshes = list_meshes(offline_tree)
    assert classes == sorted(OFFLINE_CLASSES)
    assert len(meshes["train"]) == 4 * len(classes) and len(meshes["test"]) == 2 * len(classes)
    assert meshes["train"][0] == (0, "box/train/box_0001.off")
    assert meshes["test"][-1] == (len(classes) - 1, "torus/test/torus_0006.off")
    for split in ("train", "test"):
        labels = [label for label, _ in meshes[split]]
        assert labels == sorted(labels)
        for label, member in meshes[split]:
            assert member.split("/")[:2] == [classes[label], split]
            assert (offline_tree / member).is_file()


def test_zip_and_folder_forms_list_the_same_meshes(offline_tree, tmp_path):
    classes, meshes = list_meshes(offline_tree)
    zipped = zip_tree(offline_tree, tmp_path / "ModelNet40.zip")
    z_classes, z_meshes = list_meshes(zipped)
    assert z_classes == classes
    assert {s: [(lbl, "ModelNet40/" + m) for lbl, m in meshes[s]] for s in meshes} == z_meshes
    # a folder holding a single ModelNet40/ (next to the __MACOSX/ that unzip creates)
    with zipfile.ZipFile(zipped) as zf:
        zf.extractall(tmp_path / "extracted")
    assert (tmp_path / "extracted" / "__MACOSX").is_dir()
    e_classes, e_meshes = list_meshes(tmp_path / "extracted")
    assert e_classes == classes and e_meshes == z_meshes


def test_list_meshes_sorts_by_name_and_warns_on_a_class_without_train(tmp_path, caplog):
    root = tmp_path / "root"
    for rel in [
        "b/train/b_0010.off",
        "b/train/b_0002.off",
        "a/train/a_0001.off",
        "c/test/c_0003.off",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_off(root / rel, TETRA_V, TETRA_F)
    (root / "b" / "train" / "._b_0001.off").write_bytes(b"junk")  # macOS resource fork
    (root / "b" / "train" / "notes.txt").write_text("x")
    (root / "stray").mkdir()  # no train/test inside: not a class
    with caplog.at_level("WARNING", logger="kdinv.data.modelnet"):
        classes, meshes = list_meshes(root)
    assert classes == ["a", "b", "c"]
    assert meshes["train"] == [
        (0, "a/train/a_0001.off"),
        (1, "b/train/b_0002.off"),
        (1, "b/train/b_0010.off"),
    ]
    assert meshes["test"] == [(2, "c/test/c_0003.off")]
    assert "'c' has no train mesh" in caplog.text


def test_zip_members_are_sorted_by_name_whatever_the_zip_order(tmp_path):
    zipped = tmp_path / "ModelNet40.zip"
    names = ["b/train/b_0002.off", "a/test/a_0009.off", "b/train/b_0001.off", "a/train/a_0003.off"]
    names += ["a/train/a_0001.off", "b/test/b_0004.off", "a/test/a_0005.off"]
    with zipfile.ZipFile(zipped, "w") as zf:
        for name in names:
            zf.writestr(name, QUAD_OFF)
    classes, meshes = list_meshes(zipped)
    assert classes == ["a", "b"]
    assert meshes == {
        "train": [(0, "a/train/a_0001.off"), (0, "a/train/a_0003.off"), (1, "b/train/b_0001.off"),
                  (1, "b/train/b_0002.off")],
        "test": [(0, "a/test/a_0005.off"), (0, "a/test/a_0009.off"), (1, "b/test/b_0004.off")],
    }  # fmt: skip


def test_list_meshes_errors_name_the_source(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=re.escape(str(empty)) + ".*no ModelNet class folder"):
        list_meshes(empty)
    with pytest.raises(DataError, match="no such file or folder"):
        list_meshes(tmp_path / "missing")
    hollow = tmp_path / "hollow"
    (hollow / "chair" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=re.escape(str(hollow)) + ".*'chair' holds no .off"):
        list_meshes(hollow)
    only_test = tmp_path / "only_test"
    (only_test / "chair" / "test").mkdir(parents=True)
    write_off(only_test / "chair" / "test" / "chair_0001.off", TETRA_V, TETRA_F)
    with pytest.raises(DataError, match="no train mesh found"):
        list_meshes(only_test)
    no_off = tmp_path / "no_off.zip"
    with zipfile.ZipFile(no_off, "w") as zf:
        zf.writestr("ModelNet40/README.txt", "x")
    with pytest.raises(DataError, match=re.escape(str(no_off)) + ".*no ModelNet mesh"):
        list_meshes(no_off)
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"PK not really")
    with pytest.raises(DataError, match="cannot open the zip"):
        list_meshes(bad_zip)
    two_roots = tmp_path / "two.zip"
    with zipfile.ZipFile(two_roots, "w") as zf:
        zf.writestr("ModelNet10/chair/train/chair_0001.off", QUAD_OFF)
        zf.writestr("ModelNet40/chair/train/chair_0001.off", QUAD_OFF)
    with pytest.raises(DataError, match="several top folders"):
        list_meshes(two_roots)


def test_prepare_tree_zip_and_processes_agree(offline_tree, tmp_path):
    zipped = zip_tree(offline_tree, tmp_path / "ModelNet40.zip")
    ref = prepare_modelnet(offline_tree, num_points=64, seed=3, processes=1)
    assert ref["classes"] == sorted(OFFLINE_CLASSES)
    n_cls = len(OFFLINE_CLASSES)
    for split, per_class in (("train", 4), ("test", 2)):
        x, y = ref[split]
        assert x.dtype == np.float32 and x.shape == (per_class * n_cls, 64, 3)
        assert y.dtype == np.int64 and y.tolist() == [
            c for c in range(n_cls) for _ in range(per_class)
        ]
        assert np.abs(x).max() <= 1.0
        assert np.isfinite(x).all()
    for source, processes in ((zipped, 1), (zipped, 2), (offline_tree, 2)):
        other = prepare_modelnet(source, num_points=64, seed=3, processes=processes)
        assert other["classes"] == ref["classes"]
        for split in ("train", "test"):
            np.testing.assert_array_equal(other[split][0], ref[split][0])
            np.testing.assert_array_equal(other[split][1], ref[split][1])
    # another seed gives other points; a subset of the classes gives the same points for them
    assert not np.array_equal(
        prepare_modelnet(offline_tree, 64, seed=4)["train"][0], ref["train"][0]
    )
    subset = tmp_path / "subset"
    shutil.copytree(offline_tree / "torus", subset / "torus")
    sub = prepare_modelnet(subset, 64, seed=3)
    assert sub["classes"] == ["torus"]
    np.testing.assert_array_equal(sub["train"][0], ref["train"][0][ref["train"][1] == n_cls - 1])


def test_offline_classes_differ_in_shape(offline_tree):
    """Simple shape statistics of the normalised clouds separate the classes' means."""
    out = prepare_modelnet(offline_tree, num_points=256, seed=0)
    x, y = out["train"]
    radius = np.linalg.norm(x - x.mean(axis=1, keepdims=True), axis=2)
    feats = np.stack([radius.mean(1), radius.std(1)], axis=1)
    means = np.stack([feats[y == c].mean(0) for c in range(len(out["classes"]))])
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert (dist[~np.eye(len(means), dtype=bool)] > 1e-3).all()


@pytest.mark.parametrize("processes", [1, 2])
def test_prepare_names_a_broken_mesh_and_its_source(offline_tree, tmp_path, processes):
    tree = tmp_path / "tree"
    shutil.copytree(offline_tree / "cone", tree / "cone")
    shutil.copytree(offline_tree / "box", tree / "box")
    bad = tree / "cone" / "train" / "cone_0002.off"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(
        DataError, match=r"cone/train/cone_0002\.off: truncated.*" + re.escape(str(tree))
    ):
        prepare_modelnet(tree, 32, seed=0, processes=processes)
    zipped = zip_tree(tree, tmp_path / "ModelNet40.zip", junk=False)
    with pytest.raises(
        DataError, match=r"ModelNet40/cone/train/cone_0002\.off: truncated.*ModelNet40\.zip"
    ):
        prepare_modelnet(zipped, 32, seed=0, processes=processes)


def test_prepare_rejects_bad_arguments(offline_tree):
    with pytest.raises(ValueError, match="num_points"):
        prepare_modelnet(offline_tree, 0, seed=0)
    with pytest.raises(ValueError, match="processes"):
        prepare_modelnet(offline_tree, 10, seed=0, processes=0)
    with pytest.raises(ValueError, match="seed"):
        prepare_modelnet(offline_tree, 10, seed=-1)


# --------------------------------------------------------------------------------------------
# Sources "local" and "download"
# --------------------------------------------------------------------------------------------


def test_resolve_local_modelnet(offline_tree, tmp_path):
    (tmp_path / "zipdir").mkdir()
    zipped = zip_tree(offline_tree, tmp_path / "zipdir" / "ModelNet40.zip")
    assert resolve_local_modelnet(zipped) == zipped
    assert resolve_local_modelnet(tmp_path / "zipdir") == zipped
    assert resolve_local_modelnet(offline_tree) == offline_tree
    assert resolve_local_modelnet(offline_tree.parent) == offline_tree  # holds ModelNet40/
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=re.escape(str(empty)) + ".*neither ModelNet40.zip"):
        resolve_local_modelnet(empty)
    with pytest.raises(DataError, match="no such file or folder"):
        resolve_local_modelnet(tmp_path / "missing")
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(DataError, match="fake.zip: not a zip"):
        resolve_local_modelnet(tmp_path / "fake.zip")


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_download_modelnet_success_and_corrupt_mirror(
    offline_tree, tmp_path, monkeypatch, no_proxy
):
    body = zip_tree(offline_tree, tmp_path / "served.zip").read_bytes()
    md5 = hashlib.md5(body).hexdigest()
    monkeypatch.setattr(modelnet, "MODELNET40_MD5", md5)
    monkeypatch.setattr(modelnet, "MODELNET40_SIZE", len(body))
    corrupt = body[:-1] + bytes([body[-1] ^ 0xFF])
    with FileServer({"/ModelNet40.zip": body, "/bad/ModelNet40.zip": corrupt}) as server:
        out = download_modelnet(
            f"{server.url}/ModelNet40.zip", tmp_path / "dl", retries=1, timeout_s=5
        )
        assert out == tmp_path / "dl" / "ModelNet40.zip"
        assert out.read_bytes() == body
        assert list_meshes(out) == list_meshes(tmp_path / "served.zip")
        with pytest.raises(ChecksumError) as info:
            download_modelnet(
                f"{server.url}/bad/ModelNet40.zip",
                tmp_path / "bad",
                retries=2,
                timeout_s=5,
                backoff_s=0,
            )
    message = str(info.value)
    assert "ModelNet40.zip" in message
    assert md5 in message and hashlib.md5(corrupt).hexdigest() in message
    assert not (tmp_path / "bad" / "ModelNet40.zip").exists()


def test_download_modelnet_checks_the_size(offline_tree, tmp_path, monkeypatch, no_proxy):
    body = zip_tree(offline_tree, tmp_path / "served.zip").read_bytes()
    monkeypatch.setattr(modelnet, "MODELNET40_MD5", hashlib.md5(body).hexdigest())
    monkeypatch.setattr(modelnet, "MODELNET40_SIZE", len(body) - 1)
    with (
        FileServer({"/ModelNet40.zip": body}) as server,
        pytest.raises(
            ChecksumError, match=rf"ModelNet40.zip: {len(body)} bytes .*expected {len(body) - 1}"
        ),
    ):
        download_modelnet(f"{server.url}/ModelNet40.zip", tmp_path / "dl", retries=1, timeout_s=5)


# --------------------------------------------------------------------------------------------
# The 15 real ModelNet meshes
# --------------------------------------------------------------------------------------------


def test_real_bathtub_0001_header_counts(sample_dir):
    v, f = read_off(sample_dir / "bathtub" / "train" / "bathtub_0001.off")
    assert v.shape == (3514, 3) and f.shape == (3546, 3)


def test_every_real_file_parses_with_its_header_counts(sample_dir):
    paths = sorted(sample_dir.rglob("*.off"))
    assert len(paths) == 15
    for path in paths:
        v, f = read_off(path)
        header = path.read_bytes().split(b"\n", 2)[1].split()
        assert (len(v), len(f)) == (int(header[0]), int(header[1])), path  # all triangles
        assert 0 <= f.min() and f.max() < len(v)


def test_real_crlf_files_parse_like_their_lf_copies(sample_dir):
    crlf = [p for p in sorted(sample_dir.rglob("*.off")) if b"\r\n" in p.read_bytes()]
    assert {p.name for p in crlf} >= {"bed_0001.off", "chair_0890.off", "airplane_0001.off"}
    for path in crlf:
        lf = path.read_bytes().replace(b"\r\n", b"\n")
        for a, b in zip(read_off(path), read_off(lf)):
            np.testing.assert_array_equal(a, b)


def test_real_file_with_a_glued_header(sample_dir):
    raw = (sample_dir / "bathtub" / "train" / "bathtub_0001.off").read_bytes()
    assert raw.startswith(b"OFF\n3514 3546 0\n")
    glued = raw.replace(b"OFF\n", b"OFF", 1)
    for a, b in zip(read_off(raw), read_off(glued, name="bathtub_0001.off")):
        np.testing.assert_array_equal(a, b)


def test_real_sample_listing(sample_dir):
    classes, meshes = list_meshes(sample_dir)
    assert classes == ["airplane", "bathtub", "bed", "chair", "flower_pot", "stool"]
    assert len(meshes["train"]) == 14
    assert meshes["test"] == [(3, "chair/test/chair_0890.off")]
    assert [m for _, m in meshes["train"][:2]] == [
        "airplane/train/airplane_0001.off",
        "airplane/train/airplane_0002.off",
    ]


def test_real_sample_prepare(sample_dir, tmp_path):
    tree = tmp_path / "ModelNet40"
    for rel in ["bathtub/train/bathtub_0002.off", "bed/train/bed_0001.off", "chair/test/chair_0890.off",
                "stool/train/stool_0002.off"]:  # fmt: skip
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample_dir / rel, tree / rel)
    out = prepare_modelnet(tree, num_points=1000, seed=42)
    x, y = out["train"]
    assert out["classes"] == ["bathtub", "bed", "chair", "stool"]
    assert x.shape == (3, 1000, 3) and y.tolist() == [0, 1, 3]
    assert out["test"][0].shape == (1, 1000, 3) and out["test"][1].tolist() == [2]
    for cloud in (*x, out["test"][0][0]):
        assert np.abs(cloud).max() <= 0.999999 + 1e-6
        assert np.abs(cloud).max() > 0.5  # the shape fills its box
    # the points lie on the normalised mesh
    v, f = read_off(tree / "bed/train/bed_0001.off")
    assert on_surface(x[1][:200], normalize_mesh(v), f, 1e-5).all()
    zipped = zip_tree(tree, tmp_path / "ModelNet40.zip")
    np.testing.assert_array_equal(prepare_modelnet(zipped, 1000, 42, processes=2)["train"][0], x)


def test_folds_refuse_a_class_with_fewer_training_meshes_than_folds(sample_dir, tmp_path):
    """On the real sample one class has a single training mesh: two folds cannot both hold it, so
    the fold step refuses and names the class and its count (scikit-learn would only warn)."""
    from kdinv.data.splits import save_split, write_folds

    out = prepare_modelnet(sample_dir, num_points=32, seed=0)
    x, y = out["train"]
    save_split(x, y, len(out["classes"]), tmp_path / "train.pt", classes=out["classes"])
    counts = dict(zip(*np.unique(y, return_counts=True)))
    single = [out["classes"][c] for c, n in counts.items() if n == 1]
    assert single, counts
    with pytest.raises(ValueError) as info:
        write_folds(tmp_path / "train.pt", 2, 0, [tmp_path / "f0.pt", tmp_path / "f1.pt"])
    message = str(info.value)
    assert "folds = 2" in message and all(f"class {name!r}" in message and "has 1" in message for name in single)
    assert not (tmp_path / "f0.pt").exists()
