"""Jets, source ``offline``: a seeded generator of one-, two- and three-prong jets in the real h5
layout of the hls4ml 150p files (``jetConstituentList`` (N, 150, 16) in the real feature order,
pT-descending, zero-padded; ``jets`` (N, 59) with the one-hot labels last; feature-name datasets),
for the demo and CI without network access."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np

from kdinv.data.download import staging_dir
from kdinv.data.jets import (
    CLASSES,
    FEATURE_NAMES,
    JET_FEATURE_NAMES,
    N_FEATURES,
    N_JET_COLUMNS,
    N_PARTICLES,
    NUM_CLASSES,
    _commit_splits,
)

logger = logging.getLogger(__name__)


# Per class (g, q, w, z, t): mean multiplicity, number of prongs, angular width of each prong, and
# the mass (GeV) that sets the prong separation. Gluon jets are wider and have more constituents
# than quark jets; W and Z differ in mass only; top has three prongs.
_MULT_MEAN = np.array([55.0, 32.0, 40.0, 42.0, 65.0])


_N_PRONGS = np.array([1, 1, 2, 2, 3])


_WIDTH = np.array([0.08, 0.045, 0.03, 0.03, 0.035])


_MASS = np.array([0.0, 0.0, 80.4, 91.2, 172.8])


_PT_SHAPE = 0.6  # gamma shape of the constituent pT weights: a falling spectrum, ~20% below 2 GeV


def _wrap(phi: np.ndarray) -> np.ndarray:
    """Map angles to [-pi, pi)."""
    return (phi + np.pi) % (2 * np.pi) - np.pi


def _prongs(rng: np.random.Generator, labels: np.ndarray, pt0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The prongs of jets of ``labels`` with pT ``pt0``: their pT shares (G, 3) and their centres
    (G, 3, 2) in (eta, phi) relative to the seed axis, from 1, 2 or 3 prongs by class."""
    g = len(labels)
    n_prongs = _N_PRONGS[labels]
    shares = np.zeros((g, 3))
    centres = np.zeros((g, 3, 2))
    angle = rng.uniform(0.0, 2 * np.pi, g)
    two = n_prongs == 2
    z = rng.uniform(0.25, 0.75, g)
    sep = _MASS[labels] / (pt0 * np.sqrt(z * (1.0 - z)))  # m^2 ~ z(1-z) pT^2 dR^2
    direction = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    shares[:, 0] = np.where(n_prongs == 1, 1.0, z)
    shares[two, 1] = 1.0 - z[two]
    centres[two, 0] = -((1.0 - z) * sep)[two, None] * direction[two]
    centres[two, 1] = (z * sep)[two, None] * direction[two]
    three = n_prongs == 3
    dirichlet = rng.dirichlet([4.0, 4.0, 4.0], g)
    radius = _MASS[labels] / pt0  # three prongs at 120 degrees: m ~ r pT
    jitter = rng.normal(0.0, 0.2, (g, 3))
    for k in range(3):
        a = angle + 2 * np.pi * k / 3 + jitter[:, k]
        centres[three, k, 0] = (radius * np.cos(a))[three]
        centres[three, k, 1] = (radius * np.sin(a))[three]
    shares[three] = dirichlet[three]
    return shares, centres


def _jet_rows(labels: np.ndarray, jpt, jeta, jmass, mult) -> np.ndarray:
    """The ``jets`` rows (G, 59) of the real layout: pT, eta, mass, multiplicity and the one-hot
    class of each jet."""
    g = len(labels)
    jets = np.zeros((g, N_JET_COLUMNS), dtype=np.float64)
    jets[:, JET_FEATURE_NAMES.index("j_ptfrac")] = 1.0
    jets[:, JET_FEATURE_NAMES.index("j_pt")] = jpt
    jets[:, JET_FEATURE_NAMES.index("j_eta")] = jeta
    jets[:, JET_FEATURE_NAMES.index("j_mass")] = jmass
    jets[:, JET_FEATURE_NAMES.index("j_multiplicity")] = mult
    jets[np.arange(g), N_JET_COLUMNS - 6 + labels] = 1.0
    return jets


def _generate_chunk(rng: np.random.Generator, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Generate the constituents and jet rows of jets with the given class labels.

    Returns:
        ``(constituents float32 (G, 150, 16), jets float32 (G, 59))`` in the real layout.
    """
    g = len(labels)
    slots = np.arange(N_PARTICLES)
    pt0 = rng.uniform(800.0, 1200.0, g)
    eta0 = rng.uniform(-1.5, 1.5, g)
    phi0 = rng.uniform(-np.pi, np.pi, g)
    mult = np.clip(rng.poisson(_MULT_MEAN[labels]), 3, N_PARTICLES)
    valid = slots[None, :] < mult[:, None]  # (G, 150)

    shares, centres = _prongs(rng, labels, pt0)

    # Assign the constituents to prongs, spread them around the prong centres, share the pT.
    u = rng.random((g, N_PARTICLES))
    cum = np.cumsum(shares, axis=1)
    prong = (u[:, :, None] > cum[:, None, :2]).sum(axis=2)  # (G, 150) in 0..2
    onehot = (prong[:, :, None] == np.arange(3)) & valid[:, :, None]
    centre = np.take_along_axis(centres, prong[:, :, None].repeat(2, axis=2), axis=1)
    offset = rng.normal(0.0, 1.0, (g, N_PARTICLES, 2)) * _WIDTH[labels][:, None, None]
    d_eta = centre[:, :, 0] + offset[:, :, 0]
    d_phi = centre[:, :, 1] + offset[:, :, 1]
    w = rng.gamma(_PT_SHAPE, 1.0, (g, N_PARTICLES)) * valid
    prong_sum = (w[:, :, None] * onehot).sum(axis=1)  # (G, 3)
    prong_sum = np.where(prong_sum > 0, prong_sum, 1.0)
    denom = np.take_along_axis(prong_sum, prong, axis=1)
    share = np.take_along_axis(shares, prong, axis=1)
    # A prong may be empty for low multiplicities; renormalise so the jet pT stays pt0.
    pt = pt0[:, None] * share * w / denom
    pt *= pt0[:, None] / np.maximum(pt.sum(axis=1, keepdims=True), 1e-12)
    pt *= valid

    eta = eta0[:, None] + d_eta
    phi = _wrap(phi0[:, None] + d_phi)
    px, py = pt * np.cos(phi), pt * np.sin(phi)
    pz, e = pt * np.sinh(eta) * valid, pt * np.cosh(eta) * valid

    # The jet: the four-vector sum of its (massless) constituents.
    jpx, jpy, jpz, je = px.sum(1), py.sum(1), pz.sum(1), e.sum(1)
    jpt = np.hypot(jpx, jpy)
    jeta = np.arcsinh(jpz / jpt)
    jphi = np.arctan2(jpy, jpx)
    jp = np.sqrt(jpt**2 + jpz**2)
    jmass = np.sqrt(np.maximum(je**2 - jp**2, 0.0))

    eta_rel = (eta - jeta[:, None]) * valid
    phi_rel = _wrap(phi - jphi[:, None]) * valid
    # Rotate (eta_rel, phi_rel) onto the pT-weighted principal axis of the jet.
    c_ee = (pt * eta_rel**2).sum(1)
    c_pp = (pt * phi_rel**2).sum(1)
    c_ep = (pt * eta_rel * phi_rel).sum(1)
    alpha = 0.5 * np.arctan2(2 * c_ep, c_ee - c_pp)
    ca, sa = np.cos(alpha)[:, None], np.sin(alpha)[:, None]
    eta_rot = ca * eta_rel + sa * phi_rel
    phi_rot = -sa * eta_rel + ca * phi_rel
    p = pt * np.cosh(eta)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_theta = np.where(valid, np.tanh(eta), 0.0)
        cos_theta_rel = np.where(
            valid,
            (px * jpx[:, None] + py * jpy[:, None] + pz * jpz[:, None]) / (p * jp[:, None]),
            0.0,
        )
    features = np.stack(
        [
            px, py, pz, e, e / je[:, None], pt, pt / jpt[:, None], eta * valid, eta_rel,
            eta_rot, phi * valid, phi_rel, phi_rot, np.hypot(eta_rel, phi_rel),
            cos_theta, cos_theta_rel,
        ],
        axis=2,
    )  # fmt: skip
    features *= valid[:, :, None]
    # Store pT-descending, as in the real files; padding after the last constituent.
    order = np.argsort(np.where(valid, -pt, np.inf), axis=1, kind="stable")
    features = np.take_along_axis(features, order[:, :, None], axis=1)

    jets = _jet_rows(labels, jpt, jeta, jmass, mult)
    return features.astype(np.float32), jets.astype(np.float32)


def _write_offline_file(path: Path, seed_seq: list[int], n_jets: int) -> np.ndarray:
    """Write one offline h5 file of ``n_jets`` jets; return its labels."""
    rng = np.random.default_rng(seed_seq)
    labels = rng.permutation(np.arange(n_jets) % NUM_CLASSES)  # classes balanced within a file
    with h5py.File(path, "w", track_order=False) as fh:
        const = fh.create_dataset(
            "jetConstituentList", (n_jets, N_PARTICLES, N_FEATURES), dtype="<f4", track_times=False
        )
        jets = fh.create_dataset("jets", (n_jets, N_JET_COLUMNS), dtype="<f4", track_times=False)
        for k, start in enumerate(range(0, n_jets, _GEN_CHUNK)):
            stop = min(start + _GEN_CHUNK, n_jets)
            chunk_rng = np.random.default_rng([*seed_seq, k])
            c, j = _generate_chunk(chunk_rng, labels[start:stop])
            const[start:stop] = c
            jets[start:stop] = j
        fh.create_dataset(
            "particleFeatureNames",
            data=np.array([n.encode() for n in FEATURE_NAMES]),
            track_times=False,
        )
        fh.create_dataset(
            "jetFeatureNames",
            data=np.array([n.encode() for n in JET_FEATURE_NAMES]),
            track_times=False,
        )
    return labels


def write_offline_jets(
    dest: str | Path,
    seed: int,
    files: dict[str, int] | None = None,
    jets_per_file: int = 1000,
) -> None:
    """Write a seeded hls4ml-jets look-alike in the real layout (the ``offline`` source).

    Each jet gets a class (balanced within a file, shuffled) and a crude class-dependent
    substructure around a seed axis with pT in [800, 1200] GeV, |eta| < 1.5:

    - gluon and quark jets: one prong of width 0.08 (gluon) or 0.045 (quark), with a Poisson
      multiplicity of mean 55 (gluon) or 32 (quark);
    - W and Z jets: two prongs of width 0.03 with pT shares z, 1 - z (z ~ U[0.25, 0.75])
      separated by m / (pT sqrt(z (1 - z))) with m = 80.4 or 91.2 GeV, so the jet mass is near the
      boson's; multiplicities 40 and 42;
    - top jets: three prongs at about 120 degrees on a circle of radius m_t / pT (m_t = 172.8 GeV),
      multiplicity 65.

    Constituent pT follow a falling spectrum (gamma(0.6) weights normalised to the jet pT, about a
    fifth of them below 2 GeV). The constituents are massless and all 16 features are consistent:
    px = pT cos(phi), py = pT sin(phi), pz = pT sinh(eta), E = pT cosh(eta); eta_rel and phi_rel are
    relative to the four-vector sum of the constituents (the jet), pT_rel and E_rel are fractions of
    the jet's pT and E, eta_rot and phi_rot are (eta_rel, phi_rel) rotated onto the jet's
    pT-weighted principal axis, DeltaR = sqrt(eta_rel^2 + phi_rel^2), cos(theta) = tanh(eta) and
    cos(theta_rel) is the cosine of the angle to the jet momentum. Constituents are stored
    pT-descending and zero-padded to 150, as in the real files. The ``jets`` rows hold j_ptfrac
    (1), j_pt, j_eta, j_mass, j_multiplicity and the one-hot labels (j_undef 0); the other columns
    are 0.

    Files are named like the real ones, ``jetImage_<i>_150p_<j>_<j+n>.h5`` (``i`` = file index // 5,
    ``j`` = (file index % 5) * n), in ``dest/train`` and ``dest/val``. Both folders are staged next
    to ``dest`` and renamed into place at the end (replacing existing ``train``/``val`` folders).
    Same arguments give identical arrays.

    Args:
        dest: folder that receives ``train/`` and ``val/``.
        seed: seed of the generator.
        files: number of files per split, keys ``"train"`` and ``"val"``; default 4 and 1.
        jets_per_file: jets in each file, >= 1.

    Raises:
        ValueError: an argument is out of range.
    """
    files = {"train": 4, "val": 1} if files is None else dict(files)
    if set(files) != {"train", "val"}:
        raise ValueError(f"files needs the keys 'train' and 'val', got {sorted(files)}")
    if any(int(n) < 1 for n in files.values()):
        raise ValueError(f"every split needs at least one file, got {files}")
    if jets_per_file < 1:
        raise ValueError(f"jets_per_file must be >= 1, got {jets_per_file}")
    dest = Path(dest)
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    with staging_dir(dest) as tmp:
        for split_index, (split, n_files) in enumerate(sorted(files.items())):
            folder = tmp / split
            folder.mkdir()
            for i in range(int(n_files)):
                j = (i % 5) * jets_per_file
                name = f"jetImage_{i // 5}_150p_{j}_{j + jets_per_file}.h5"
                labels = _write_offline_file(
                    folder / name, [int(seed), split_index, i], jets_per_file
                )
                counts += np.bincount(labels, minlength=NUM_CLASSES)
                logger.debug("offline jets: wrote %s", folder / name)
        _commit_splits(tmp, dest, ("train", "val"))
    logger.info(
        "jets offline demo (seed %d): %d train and %d val files of %d jets written into %s; "
        "class counts %s",
        seed, files["train"], files["val"], jets_per_file, dest,
        dict(zip(CLASSES, counts.tolist())),
    )  # fmt: skip


_GEN_CHUNK = 2000  # jets generated at once by the offline writer (fixed: part of the seeding)
