"""hls4ml LHC jets (150 constituents): the three data sources, the h5 checks and the preprocessing.

Sources (the ``data.jets.source`` switch of the workflow):

- ``download``: :func:`download_jets` fetches the two Zenodo archives of record 3602260
  (:data:`ARCHIVES`: ``hls4ml_LHCjet_150p_train.tar.gz``, 2.7 GB, and
  ``hls4ml_LHCjet_150p_val.tar.gz``) with the resumable, md5-checked
  :func:`kdinv.data.download.fetch_file` and extracts them with :func:`extract_archives`.
- ``local``: :func:`resolve_local_jets` takes a folder that already holds either the extracted
  ``train/`` and ``val/`` folders of ``*.h5`` files (read in place) or the two archives
  (md5-checked and extracted).
- ``offline``: :func:`write_offline_jets` writes a small, seeded look-alike with the real file
  layout and a crude but class-dependent jet substructure, for demos and CI without network access.
  It is not physics: models trained on it say nothing about the paper's numbers.

All three end in a folder with ``train/*.h5`` and ``val/*.h5`` (:func:`list_h5_files`). The
``val`` split is the held-out test split (the authors used it both for monitoring and for the final
metrics; we call it ``test``).

The file format (one file per 10,000 jets in the real data, names like
``jetImage_0_150p_0_10000.h5``):

- ``jetConstituentList``: float32 (N, 150, 16), the constituents of each jet, zero-padded after the
  last one, with the 16 features of :data:`FEATURE_NAMES` (px, py, pz, E, E_rel, pT, pT_rel, eta,
  eta_rel, eta_rot, phi, phi_rel, phi_rot, DeltaR, cos theta, cos theta_rel).
- ``jets``: float32 (N, 59), jet-level observables; the last six columns are ``j_g, j_q, j_w, j_z,
  j_t, j_undef``. The labels are the one-hot columns ``jets[:, -6:-1]`` (:data:`CLASSES`).
- ``particleFeatureNames`` and ``jetFeatureNames``: the column names as byte strings. The real
  files also hold jet images (``jetImage``...), which are not used and not written offline.

Preprocessing (:func:`preprocess_jets`; docs/data.md): per jet, drop the constituents with
pT <= 2 GeV, keep the 16 of highest pT in explicitly sorted descending order, zero-pad to 16, take
the features (pT, eta_rel, phi_rel) (indices 5, 8, 11); drop jets left without constituents. The
files are streamed in chunks, so memory does not grow with the number of files beyond the small
(N, 16, 3) output. The robust scaling is fitted later, per fold.

Every writer stages its output in a temporary folder next to the destination and moves it in with
renames only once it is complete, so a failure leaves nothing half-written behind.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import h5py
import numpy as np

from kdinv.data.download import ChecksumError, DataError, fetch_file, md5sum, staging_dir

logger = logging.getLogger(__name__)

#: The 16 constituent features of ``jetConstituentList``, in the stored order.
FEATURE_NAMES: tuple[str, ...] = (
    "j1_px", "j1_py", "j1_pz", "j1_e", "j1_erel", "j1_pt", "j1_ptrel", "j1_eta", "j1_etarel",
    "j1_etarot", "j1_phi", "j1_phirel", "j1_phirot", "j1_deltaR", "j1_costheta", "j1_costhetarel",
)  # fmt: skip

#: Indices of pT, eta_rel and phi_rel in :data:`FEATURE_NAMES`: the three features the models see.
PT, ETA_REL, PHI_REL = 5, 8, 11
SELECTED_FEATURES: tuple[int, int, int] = (PT, ETA_REL, PHI_REL)

#: Class names in label order: gluon, light quark, W, Z, top (columns j_g ... j_t of ``jets``).
CLASSES: tuple[str, ...] = ("g", "q", "w", "z", "t")
NUM_CLASSES = len(CLASSES)

#: The 59 columns of the ``jets`` dataset; the last six are the truth labels.
JET_FEATURE_NAMES: tuple[str, ...] = (
    "j_ptfrac", "j_pt", "j_eta", "j_mass",
    "j_tau1_b1", "j_tau2_b1", "j_tau3_b1", "j_tau1_b2", "j_tau2_b2", "j_tau3_b2",
    "j_tau32_b1", "j_tau32_b2", "j_zlogz",
    "j_c1_b0", "j_c1_b1", "j_c1_b2", "j_c2_b1", "j_c2_b2", "j_d2_b1", "j_d2_b2",
    "j_d2_a1_b1", "j_d2_a1_b2", "j_m2_b1", "j_m2_b2", "j_n2_b1", "j_n2_b2",
    "j_tau1_b1_mmdt", "j_tau2_b1_mmdt", "j_tau3_b1_mmdt", "j_tau1_b2_mmdt", "j_tau2_b2_mmdt",
    "j_tau3_b2_mmdt", "j_tau32_b1_mmdt", "j_tau32_b2_mmdt",
    "j_c1_b0_mmdt", "j_c1_b1_mmdt", "j_c1_b2_mmdt", "j_c2_b1_mmdt", "j_c2_b2_mmdt",
    "j_d2_b1_mmdt", "j_d2_b2_mmdt", "j_d2_a1_b1_mmdt", "j_d2_a1_b2_mmdt",
    "j_m2_b1_mmdt", "j_m2_b2_mmdt", "j_n2_b1_mmdt", "j_n2_b2_mmdt",
    "j_mass_trim", "j_mass_mmdt", "j_mass_prun", "j_mass_sdb2", "j_mass_sdm1",
    "j_multiplicity",
    "j_g", "j_q", "j_w", "j_z", "j_t", "j_undef",
)  # fmt: skip
LABEL_COLUMNS: tuple[str, ...] = ("j_g", "j_q", "j_w", "j_z", "j_t", "j_undef")

N_PARTICLES = 150  # constituent slots per jet in the 150p files
N_FEATURES = len(FEATURE_NAMES)
N_JET_COLUMNS = len(JET_FEATURE_NAMES)

#: split -> (archive name, md5, size in bytes or None) of the Zenodo record 3602260.
ARCHIVES: dict[str, tuple[str, str, int | None]] = {
    "train": ("hls4ml_LHCjet_150p_train.tar.gz", "af12d3a500414924e70a73b56fc49aec", 2_725_115_104),
    "val": ("hls4ml_LHCjet_150p_val.tar.gz", "ff902e6a02bfb4247a9068bf7ff7f6db", None),
}
ZENODO_URL = "https://zenodo.org/records/3602260/files/"

#: Folder of each split inside a jets data folder: the archives' ``val`` is our test split.
SPLIT_DIRS: dict[str, str] = {"train": "train", "test": "val"}

_CHUNK = 1 << 20

__all__ = [
    "ARCHIVES", "CLASSES", "ETA_REL", "FEATURE_NAMES", "JET_FEATURE_NAMES", "PHI_REL", "PT",
    "ZENODO_URL", "ChecksumError", "DataError", "download_jets", "extract_archives",
    "list_h5_files", "preprocess_jets", "resolve_local_jets",
]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Staging helpers
# --------------------------------------------------------------------------------------------


def _commit_splits(staged: Path, dest: Path, splits: Sequence[str]) -> None:
    """Move the complete folders ``staged/<split>`` to ``dest/<split>`` with renames.

    An existing ``dest/<split>`` is first moved aside into ``staged`` (and deleted with it), so
    each split folder is replaced as a whole; other content of ``dest`` is left alone. If a rename
    fails, the folders moved aside are put back.
    """
    dest.mkdir(parents=True, exist_ok=True)
    aside: list[tuple[Path, Path]] = []
    try:
        for split in splits:
            target = dest / split
            if target.exists() or target.is_symlink():
                old = staged / f".old-{split}"
                os.replace(target, old)
                aside.append((old, target))
            os.replace(staged / split, target)
    except OSError:
        for old, target in aside:
            if not target.exists():
                os.replace(old, target)
        raise


def _check_not_inside(path: Path, dest: Path, splits: Sequence[str]) -> None:
    """Refuse to replace split folders of ``dest`` that contain ``path`` (e.g. the archives)."""
    resolved = path.resolve()
    for split in splits:
        folder = (dest / split).resolve()
        if resolved == folder or folder in resolved.parents:
            raise ValueError(
                f"{path} lies inside {dest / split}, which would be replaced; choose another "
                "destination"
            )


# --------------------------------------------------------------------------------------------
# Finding and extracting the files
# --------------------------------------------------------------------------------------------


def _h5_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.h5") if p.is_file()) if folder.is_dir() else []


def list_h5_files(source: str | Path) -> dict[str, list[Path]]:
    """Return the h5 files of each split of a jets data folder.

    Args:
        source: a folder holding ``train/`` and ``val/`` subfolders of ``*.h5`` files (the extracted
            archives). ``val`` is the held-out test split.

    Returns:
        ``{"train": [...], "test": [...]}``, each sorted by file name.

    Raises:
        DataError: a split folder is missing or holds no ``*.h5`` file (the message names it).
    """
    source = Path(source)
    out: dict[str, list[Path]] = {}
    for split, sub in SPLIT_DIRS.items():
        folder = source / sub
        found = _h5_in(folder)
        if not found:
            what = "holds no *.h5 file" if folder.is_dir() else "does not exist"
            raise DataError(f"{folder}: the jets {split} folder {what}")
        out[split] = found
    return out


def _is_unsafe(member: tarfile.TarInfo) -> bool:
    """An absolute path or a ``..`` component: it would land outside the destination."""
    pure = PurePosixPath(member.name)
    return pure.is_absolute() or ".." in pure.parts or member.name.startswith(("\\", "/"))


def _extract_h5_members(archive: Path, out: Path) -> int:
    """Stream the ``*.h5`` members of ``archive`` (any depth) into the flat folder ``out``.

    Returns the number of files written. Members that are not ``*.h5`` (folders, READMEs) are
    skipped; an unsafe member (absolute path, ``..``) is refused, as are links and special files
    named ``*.h5`` and two members with the same file name.
    """
    count = 0
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                if _is_unsafe(member):
                    raise DataError(
                        f"{archive.name}: member {member.name!r} has an absolute path or a '..' "
                        f"component; refusing to extract the archive [{archive}]"
                    )
                name = PurePosixPath(member.name).name
                if not fnmatch.fnmatchcase(name, "*.h5"):
                    continue
                if not member.isfile():
                    raise DataError(
                        f"{archive.name}: member {member.name!r} is a link or special file, not a "
                        f"regular file; refusing it [{archive}]"
                    )
                target = out / name
                if target.exists():
                    raise DataError(
                        f"{archive.name}: two members are named {name!r}; cannot put both into "
                        f"{out.name}/ [{archive}]"
                    )
                src = tar.extractfile(member)
                assert src is not None  # a regular file always has a payload
                with src, open(target, "wb") as fh:
                    shutil.copyfileobj(src, fh, _CHUNK)
                count += 1
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{archive.name}: not a valid tar.gz archive or truncated "
            f"({type(exc).__name__}: {exc}) [{archive}]"
        ) from exc
    except OSError as exc:
        raise DataError(
            f"{archive.name}: cannot read or extract ({type(exc).__name__}: {exc}) [{archive}]"
        ) from exc
    return count


def extract_archives(archive_dir: str | Path, dest: str | Path) -> Path:
    """Extract the two jet archives into ``dest/train`` and ``dest/val``.

    The archives are those named in :data:`ARCHIVES` (read at call time), in ``archive_dir``. Every
    member whose file name matches ``*.h5``, at any depth (the real archives hold ``train/*.h5`` and
    ``val/*.h5``), goes flat into its split's folder. Members with an absolute path or a ``..``
    component make the whole extraction fail (the same paths tarfile's ``filter="data"`` refuses),
    as do links named ``*.h5``. Both splits are staged next to ``dest`` and renamed into place once
    both are complete; existing ``dest/train`` and ``dest/val`` folders are replaced, nothing else
    in ``dest`` is touched (``dest`` may be ``archive_dir``).

    Returns:
        ``dest``.

    Raises:
        DataError: an archive is missing, is not a valid tar.gz, holds an unsafe member, or holds no
            ``*.h5`` file (the message names the archive).
        ValueError: ``archive_dir`` lies inside ``dest/train`` or ``dest/val``.
    """
    archive_dir, dest = Path(archive_dir), Path(dest)
    archives = dict(ARCHIVES)
    paths = {split: archive_dir / name for split, (name, _md5, _size) in archives.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(f"{', '.join(missing)}: missing from {archive_dir}")
    _check_not_inside(archive_dir, dest, list(paths))
    with staging_dir(dest) as tmp:
        for split, path in paths.items():
            (tmp / split).mkdir()
            logger.info("extracting %s into %s", path, dest / split)
            n = _extract_h5_members(path, tmp / split)
            if n == 0:
                raise DataError(f"{path.name}: holds no *.h5 file [{path}]")
            logger.info("%s: %d h5 files", path.name, n)
        _commit_splits(tmp, dest, list(paths))
    return dest


def resolve_local_jets(
    local_dir: str | Path, extract_to: str | Path, verify_checksums: bool = True
) -> Path:
    """Find the jets data in a user's folder (the ``local`` source).

    Args:
        local_dir: either holds the extracted ``train/`` and ``val/`` folders of ``*.h5`` files,
            which are then read in place, or the two archives of :data:`ARCHIVES`, which are
            extracted into ``extract_to``. Extracted folders take precedence.
        extract_to: where archives are extracted (``extract_to/train``, ``extract_to/val``);
            untouched when ``local_dir`` holds the folders.
        verify_checksums: check the archives' md5 (and size, where known) against
            :data:`ARCHIVES` before extracting. Extracted folders cannot be verified.

    Returns:
        The folder with ``train/`` and ``val/`` to give to :func:`list_h5_files`: ``local_dir``
        or ``extract_to``.

    Raises:
        DataError: neither layout is complete (the message says what is missing where).
        ChecksumError: an archive's md5 or size differs from the official one.
    """
    local_dir, extract_to = Path(local_dir), Path(extract_to)
    folders = {sub: _h5_in(local_dir / sub) for sub in SPLIT_DIRS.values()}
    if all(folders.values()):
        logger.info(
            "jets: reading the h5 files in place from %s (%d train, %d val files)",
            local_dir, len(folders["train"]), len(folders["val"]),
        )  # fmt: skip
        return local_dir
    archives = dict(ARCHIVES)
    present = {split: (local_dir / name).is_file() for split, (name, _, _) in archives.items()}
    if all(present.values()):
        if verify_checksums:
            for name, md5, size in archives.values():
                path = local_dir / name
                if size is not None and path.stat().st_size != size:
                    raise ChecksumError(
                        f"{name}: {path.stat().st_size} bytes, the official archive has {size} "
                        f"[{path}]"
                    )
                actual = md5sum(path)
                if actual != md5:
                    raise ChecksumError(
                        f"{name}: md5 {actual} does not match the official {md5}; the archive is "
                        f"corrupt or not the original [{path}]"
                    )
        return extract_archives(local_dir, extract_to)
    lacking_folders = [f"{sub}/" for sub, found in folders.items() if not found]
    lacking_archives = [archives[s][0] for s, ok in present.items() if not ok]
    raise DataError(
        f"{local_dir}: holds neither the extracted jets folders (no *.h5 in "
        f"{', '.join(lacking_folders)}) nor the archives (missing {', '.join(lacking_archives)})"
    )


# --------------------------------------------------------------------------------------------
# Source "download"
# --------------------------------------------------------------------------------------------


def download_jets(
    base_url: str,
    dest_dir: str | Path,
    retries: int = 3,
    timeout_s: float = 60.0,
    *,
    backoff_s: float = 2.0,
    keep_archives: bool = True,
) -> Path:
    """Download the two jet archives and extract them (the ``download`` source).

    Each archive of :data:`ARCHIVES` (names, md5s and sizes read at call time) is fetched from
    ``<base_url>/<name>`` into ``dest_dir/<name>`` with :func:`kdinv.data.download.fetch_file`
    (resumable across attempts and reruns; skipped when already present with the right md5), then
    both are extracted into ``dest_dir/train`` and ``dest_dir/val`` (:func:`extract_archives`).

    Args:
        base_url: the mirror, e.g. :data:`ZENODO_URL` (trailing slash optional; ``file://`` works).
        dest_dir: folder for the archives and the extracted ``train/``, ``val/``.
        retries: attempts per archive in all, >= 1.
        timeout_s: socket timeout of each connection and read, seconds.
        backoff_s: base of the exponential back-off between attempts, seconds.
        keep_archives: keep the archives after extraction (a rerun then skips the download);
            False deletes them once extracted.

    Returns:
        ``dest_dir``, the folder holding ``train/`` and ``val/``.

    Raises:
        DownloadError: an archive could not be fetched.
        ChecksumError: an archive's size or md5 is wrong (the message names the archive).
        DataError: an archive cannot be extracted.
    """
    dest_dir = Path(dest_dir)
    base = base_url if base_url.endswith("/") else base_url + "/"
    archives = dict(ARCHIVES)
    for name, md5, size in archives.values():
        fetch_file(
            base + name, dest_dir / name, md5=md5, size=size, retries=retries,
            backoff_s=backoff_s, timeout_s=timeout_s,
        )  # fmt: skip
    extract_archives(dest_dir, dest_dir)
    if not keep_archives:
        for name, _md5, _size in archives.values():
            (dest_dir / name).unlink(missing_ok=True)
    return dest_dir


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def _decoded(names: np.ndarray) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(names).ravel()]


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise DataError(f"{path.name}: file not found ({path})")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(
            f"{path.name}: not a readable HDF5 file or truncated ({exc}) [{path}]"
        ) from exc


def _checked_datasets(fh: h5py.File, path: Path) -> tuple[h5py.Dataset, h5py.Dataset]:
    """Return (jetConstituentList, jets) after checking their presence, shapes and types."""
    dsets = []
    for key in ("jetConstituentList", "jets"):
        obj = fh.get(key)
        if not isinstance(obj, h5py.Dataset):
            raise DataError(
                f"{path.name}: no dataset {key!r} (it holds {sorted(fh.keys())}) [{path}]"
            )
        if not np.issubdtype(obj.dtype, np.number):
            raise DataError(
                f"{path.name}: dataset {key!r} has dtype {obj.dtype}, not numeric [{path}]"
            )
        dsets.append(obj)
    const, jets = dsets
    if const.ndim != 3 or const.shape[1:] != (N_PARTICLES, N_FEATURES):
        raise DataError(
            f"{path.name}: jetConstituentList has shape {const.shape}, expected "
            f"(N, {N_PARTICLES}, {N_FEATURES}) [{path}]"
        )
    if jets.ndim != 2 or jets.shape[1] != N_JET_COLUMNS:
        raise DataError(
            f"{path.name}: jets has shape {jets.shape}, expected (N, {N_JET_COLUMNS}) [{path}]"
        )
    if const.shape[0] != jets.shape[0]:
        raise DataError(
            f"{path.name}: jetConstituentList holds {const.shape[0]} jets but jets holds "
            f"{jets.shape[0]} rows [{path}]"
        )
    # Where the files name their columns, the ones we use must be where we expect them.
    try:
        if "particleFeatureNames" in fh:
            names = _decoded(fh["particleFeatureNames"][()])
            for idx in SELECTED_FEATURES:
                if idx >= len(names) or names[idx] != FEATURE_NAMES[idx]:
                    raise DataError(
                        f"{path.name}: particleFeatureNames[{idx}] is "
                        f"{names[idx] if idx < len(names) else 'missing'!r}, expected "
                        f"{FEATURE_NAMES[idx]!r} [{path}]"
                    )
        if "jetFeatureNames" in fh:
            names = _decoded(fh["jetFeatureNames"][()])
            if tuple(names[-6:]) != LABEL_COLUMNS:
                raise DataError(
                    f"{path.name}: the last six jetFeatureNames are {names[-6:]}, expected "
                    f"{list(LABEL_COLUMNS)} [{path}]"
                )
    except OSError as exc:
        raise DataError(f"{path.name}: cannot read the feature names ({exc}) [{path}]") from exc
    return const, jets


def _read_labels(jets: h5py.Dataset, path: Path) -> np.ndarray:
    """Read and check the five one-hot label columns of a whole file: int64 (N,)."""
    n_cols = jets.shape[1]
    try:
        onehot = jets[:, n_cols - 6 : n_cols - 1]  # (N, 5): small, read at once
    except OSError as exc:
        raise DataError(f"{path.name}: cannot read 'jets' ({exc}); truncated? [{path}]") from exc
    if not np.isfinite(onehot).all():
        bad = int((~np.isfinite(onehot)).any(axis=1).sum())
        raise DataError(f"{path.name}: {bad} rows of jets have non-finite labels [{path}]")
    is_onehot = np.all((onehot == 0) | (onehot == 1), axis=1) & (onehot.sum(axis=1) == 1)
    if not is_onehot.all():
        rows = np.flatnonzero(~is_onehot)
        raise DataError(
            f"{path.name}: {len(rows)} of {len(onehot)} rows of jets are not one-hot over "
            f"j_g, j_q, j_w, j_z, j_t (e.g. j_undef jets), first at rows {rows[:5].tolist()} "
            f"[{path}]"
        )
    return onehot.argmax(axis=1).astype(np.int64)


def _process_chunk(
    chunk: np.ndarray, n_constituents: int, pt_min: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cut, sort and pad one chunk (C, 150, 16) -> (x (C, n, 3) float32, has_constituent (C,))."""
    pt = chunk[:, :, PT]
    keep = pt > pt_min
    order = np.argsort(np.where(keep, -pt, np.inf), axis=1, kind="stable")
    width = min(n_constituents, chunk.shape[1])
    order = order[:, :width]
    x = np.zeros((len(chunk), n_constituents, 3), dtype=np.float32)
    kept = np.take_along_axis(keep, order, axis=1)
    for col, feature in enumerate(SELECTED_FEATURES):
        values = np.take_along_axis(chunk[:, :, feature], order, axis=1)
        x[:, :width, col] = np.where(kept, values, 0.0)
    return x, keep.any(axis=1)


def preprocess_jets(
    files: Sequence[str | Path],
    n_constituents: int = 16,
    pt_min: float = 2.0,
    chunk_size: int = 5000,
) -> tuple[np.ndarray, np.ndarray]:
    """Read jet h5 files in chunks and return the network-ready constituents and labels.

    Per jet: drop the constituents with pT <= ``pt_min`` (strictly greater is kept), sort the rest
    by descending pT (``np.argsort`` on -pT, stable: ties keep the stored order; the stored order is
    not trusted), keep the first ``n_constituents``, zero-pad at the end, and take the features
    (pT, eta_rel, phi_rel) (indices 5, 8, 11). Jets with no constituent left are dropped with their
    labels. The label is the argmax of the one-hot columns j_g, j_q, j_w, j_z, j_t; a row that is
    not one-hot over those five (such as a j_undef jet) is an error, not silently dropped or
    relabelled.

    Memory: every file is first opened once to check it and count its jets; the output is
    allocated once, then each file is read ``chunk_size`` jets at a time into one reused buffer. So
    the peak is the output (N x n_constituents x 3 float32 + N int64) plus one chunk
    (chunk_size x 150 x 16 float32, 48 MB at 5000), whatever the number of files.

    Args:
        files: the h5 files of one split, concatenated in the given order.
        n_constituents: constituent slots per jet, >= 1.
        pt_min: the pT cut, GeV.
        chunk_size: jets read at once, >= 1; does not change the result.

    Returns:
        ``(x, y)``: x float32 (N, n_constituents, 3), y int64 (N,) in 0..4 (:data:`CLASSES`).

    Raises:
        ValueError: an argument is out of range or ``files`` is empty.
        DataError: a file is missing, not HDF5 or truncated, lacks ``jetConstituentList`` or
            ``jets``, has a wrong shape or a jet-count mismatch, names its columns differently,
            holds non-finite pT, eta_rel, phi_rel or labels, or a row that is not one-hot
            (the message names the file and the problem).
    """
    if n_constituents < 1:
        raise ValueError(f"n_constituents must be >= 1, got {n_constituents}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("preprocess_jets needs at least one h5 file")

    counts = []
    for path in paths:  # check every file before the long pass
        with _open(path) as fh:
            const, _jets = _checked_datasets(fh, path)
            counts.append(const.shape[0])
    total = int(sum(counts))
    x = np.zeros((total, n_constituents, 3), dtype=np.float32)
    y = np.empty(total, dtype=np.int64)
    buffer = np.empty(
        (min(chunk_size, max(counts, default=1)), N_PARTICLES, N_FEATURES), np.float32
    )
    filled = 0
    for path in paths:
        filled = _preprocess_file(path, x, y, filled, buffer, chunk_size, n_constituents, pt_min)
    if filled < total:
        # Shrink in place (no copy of the output); only the dropped jets' rows are released.
        x.resize((filled, n_constituents, 3), refcheck=False)
        y.resize((filled,), refcheck=False)
    logger.info(
        "jets preprocessed: %d files, %d jets, %d kept; class counts %s",
        len(paths), total, filled, dict(zip(CLASSES, np.bincount(y, minlength=5).tolist())),
    )  # fmt: skip
    return x, y


def _preprocess_file(path: Path, x: np.ndarray, y: np.ndarray, filled: int, buffer: np.ndarray, chunk_size: int,
                     n_constituents: int, pt_min: float) -> int:
    """One file of :func:`preprocess_jets`: its kept jets into ``x`` and ``y`` from row ``filled``
    on, read ``chunk_size`` jets at a time into ``buffer``; returns the rows filled after it."""
    kept_file = 0
    with _open(path) as fh:
        const, jets = _checked_datasets(fh, path)
        labels = _read_labels(jets, path)
        n = const.shape[0]
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            chunk = buffer[: stop - start]
            try:
                const.read_direct(chunk, np.s_[start:stop], np.s_[0 : stop - start])
            except (OSError, TypeError) as exc:
                raise DataError(
                    f"{path.name}: cannot read jets {start}..{stop} of jetConstituentList "
                    f"({exc}); truncated? [{path}]"
                ) from exc
            used = chunk[:, :, list(SELECTED_FEATURES)]
            if not np.isfinite(used).all():
                bad = int((~np.isfinite(used)).any(axis=(1, 2)).sum())
                raise DataError(
                    f"{path.name}: {bad} jets among {start}..{stop - 1} have non-finite pT, "
                    f"eta_rel or phi_rel [{path}]"
                )
            del used
            xc, has = _process_chunk(chunk, n_constituents, pt_min)
            k = int(has.sum())
            x[filled : filled + k] = xc[has]
            y[filled : filled + k] = labels[start:stop][has]
            filled += k
            kept_file += k
    logger.info(
        "%s: %d jets, %d kept (%d without constituents above %g GeV dropped)",
        path.name, n, kept_file, n - kept_file, pt_min,
    )  # fmt: skip
    return filled


# --------------------------------------------------------------------------------------------
# The workflow's jobs (kdinv.data.kinds)
# --------------------------------------------------------------------------------------------


def fetch_jets(spec: dict, raw: Path) -> Path:
    """Rule fetch_jets's job: the h5 files from the configured source (``spec``: ``source`` and
    the keys it reads, :mod:`kdinv.data.kinds`), archives and extracted or generated files kept
    in ``raw``. Returns the folder of the ``train/`` and ``val/`` folders."""
    if spec["source"] == "download":
        return download_jets(spec["url"], raw, retries=3)
    if spec["source"] == "local":
        return resolve_local_jets(spec["local_dir"], extract_to=raw / "h5")
    from kdinv.data.offline.jets import write_offline_jets

    source = raw / "h5"
    write_offline_jets(
        source, seed=spec["seed"], files=spec["offline_files"], jets_per_file=spec["offline_jets_per_file"]
    )
    return source


def write_jets_splits(
    source: Path, outputs: dict[str, str], processes: int, n_constituents: int, pt_min: float
) -> None:
    """Rule prepare_jets's job: the h5 files under ``source`` -> (pT, eta_rel, phi_rel) of the
    ``n_constituents`` leading constituents above ``pt_min`` (:func:`preprocess_jets`), the split
    files ``outputs`` (by split; the ``val`` files are the test split)."""
    from kdinv.data.splits import save_split

    files = list_h5_files(source)
    for split in ("train", "test"):
        x, y = preprocess_jets(files[split], n_constituents=n_constituents, pt_min=pt_min)
        save_split(x, y, len(CLASSES), outputs[split], classes=list(CLASSES))
        logger.info("%s: %d files -> %s", split, len(files[split]), x.shape)


# --------------------------------------------------------------------------------------------
# Command line (for memory measurements and manual use)
# --------------------------------------------------------------------------------------------


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m kdinv.data.jets", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write-offline", help="write the offline look-alike into DEST")
    w.add_argument("dest", type=Path)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--train-files", type=int, default=4)
    w.add_argument("--val-files", type=int, default=1)
    w.add_argument("--jets-per-file", type=int, default=1000)
    p = sub.add_parser("prepare", help="preprocess the train files of SRC into OUT.npz (x, y)")
    p.add_argument("src", type=Path, help="folder with train/ and val/")
    p.add_argument("out", type=Path)
    p.add_argument("--split", choices=sorted(SPLIT_DIRS), default="train")
    p.add_argument("--n-constituents", type=int, default=16)
    p.add_argument("--pt-min", type=float, default=2.0)
    p.add_argument("--chunk-size", type=int, default=5000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "write-offline":
        from kdinv.data.offline.jets import write_offline_jets

        write_offline_jets(
            args.dest, args.seed, {"train": args.train_files, "val": args.val_files},
            args.jets_per_file,
        )  # fmt: skip
        return 0
    files = list_h5_files(args.src)[args.split]
    x, y = preprocess_jets(files, args.n_constituents, args.pt_min, args.chunk_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as fh:
        np.savez(fh, x=x, y=y)
    print(f"{args.out}: x {x.shape} {x.dtype}, y {y.shape} {y.dtype} from {len(files)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
