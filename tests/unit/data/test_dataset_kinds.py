"""The dataset kinds (kdinv.data.kinds) and the one fetch and one prepare job that serve them all
(kdinv.data.fetch, kdinv.data.prepare): every source of every kind, through those two jobs, ends
in the same split files, of the sizes the kind declares."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from http_server import FileServer

from kdinv.data import jets, mnist, modelnet
from kdinv.data.download import ChecksumError
from kdinv.data.fetch import fetch_dataset
from kdinv.data.kinds import (
    KINDS,
    MANIFEST,
    SOURCES,
    dataset_url,
    image_side,
    source_spec,
    split_sizes,
)
from kdinv.data.prepare import prepare_dataset
from kdinv.data.splits import load_split

# A small offline entry of each kind, with every key its sources and preparation read.
OFFLINE = {
    "mnist": {"kind": "mnist", "source": "offline", "offline_test_fraction": 0.3, "pad_to": 32,
              "local_dir": None, "verify_checksums": True},
    "modelnet40": {"kind": "modelnet40", "source": "offline", "offline_train_per_class": 3,
                   "offline_test_per_class": 2, "num_points": 16, "local_dir": None},
    "jets": {"kind": "jets", "source": "offline", "offline_files": {"train": 2, "val": 1},
             "offline_jets_per_file": 30, "n_constituents": 5, "pt_min": 2.0, "local_dir": None},
}  # fmt: skip
SEED = 11


def fetch(kind: str, ds: dict, folder: Path, **extra) -> list[str]:
    """The fetch job of ``ds`` into ``folder``/raw, with the spec rules/common.smk gives it."""
    spec = {**source_spec(ds), **extra}
    if ds["source"] == "offline":
        spec["seed"] = SEED
    outputs = [str(folder / "raw" / name) for name in KINDS[kind].raw_files]
    fetch_dataset(kind, spec, outputs)
    assert all(Path(o).is_file() for o in outputs)
    return outputs


def prepare(kind: str, ds: dict, fetched: list[str], folder: Path) -> dict[str, tuple]:
    """The prepare job from ``fetched``, with the params rules/data.smk gives it; the splits."""
    desc = KINDS[kind]
    params = {key: ds[key] for key in desc.prepare_keys}
    if desc.prepare_seed is not None:
        params["seed"] = SEED
    outputs = {split: str(folder / f"{split}.pt") for split in ("train", "test")}
    prepare_dataset(kind, fetched, outputs, 2, params)
    return {split: load_split(path) for split, path in outputs.items()}


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> dict[str, tuple[Path, list[str], dict]]:
    """Each kind's offline data: (folder, the fetch job's outputs, the prepared splits)."""
    out = {}
    for kind, ds in OFFLINE.items():
        folder = tmp_path_factory.mktemp(f"offline-{kind}")
        fetched = fetch(kind, ds, folder)
        out[kind] = folder, fetched, prepare(kind, ds, fetched, folder)
    return out


def where(kind: str, fetched: list[str]) -> Path:
    """Where the fetched data are: what source.json names, or the raw files' folder."""
    if KINDS[kind].located is None:
        return Path(fetched[0]).parent
    manifest = json.loads(Path(fetched[0]).read_text())
    return Path(manifest["source"])


def same_splits(a: dict, b: dict) -> bool:
    return all(torch.equal(a[s][0], b[s][0]) and torch.equal(a[s][1], b[s][1]) and a[s][2] == b[s][2] for s in a)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_offline_data_are_prepared_to_the_sizes_the_kind_declares(kind, offline):
    ds = OFFLINE[kind]
    folder, fetched, splits = offline[kind]
    x, y, num_classes = splits["train"]
    n, floats = split_sizes(ds)  # what the memory check assumes
    assert x[0].numel() == floats
    # n is exact, or a bound by less than a sample per class (the offline MNIST test share is
    # rounded per class)
    assert 0 <= n - len(x) < num_classes
    assert tuple(x.shape[1:]) == KINDS[kind].sample_shape(ds)
    assert len(y) == len(x) and 0 < len(splits["test"][0])
    assert set(y.tolist()) == set(range(num_classes))
    if KINDS[kind].located is not None:  # source.json names the generated data, under raw/
        manifest = json.loads(Path(fetched[0]).read_text())
        assert manifest["origin"] == "offline" and where(kind, fetched).parent == folder / "raw"


@pytest.fixture
def mirror(offline, monkeypatch, tmp_path) -> dict[str, dict[str, bytes]]:
    """Each kind's offline data as the official files of its download source (URL path ->
    bytes), with the official md5 sums patched to theirs."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    files = {}
    raw = where("mnist", offline["mnist"][1])
    files["mnist"] = {f"/mnist/{name}": (raw / name).read_bytes() for name in mnist.MNIST_FILES}
    monkeypatch.setattr(
        mnist, "MNIST_FILES", {n: hashlib.md5((raw / n).read_bytes()).hexdigest() for n in mnist.MNIST_FILES}
    )

    tree = where("modelnet40", offline["modelnet40"][1])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(tree.rglob("*.off")):
            zf.write(path, f"ModelNet40/{path.relative_to(tree).as_posix()}")
    body = buffer.getvalue()
    files["modelnet40"] = {"/ModelNet40.zip": body}
    monkeypatch.setattr(modelnet, "MODELNET40_MD5", hashlib.md5(body).hexdigest())
    monkeypatch.setattr(modelnet, "MODELNET40_SIZE", len(body))

    h5 = where("jets", offline["jets"][1])
    archives = {}
    for split in ("train", "val"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
            for path in sorted((h5 / split).glob("*.h5")):
                tf.add(path, f"{split}/{path.name}")
        name = f"hls4ml_{split}.tar.gz"
        archives[split] = (name, hashlib.md5(buffer.getvalue()).hexdigest(), len(buffer.getvalue()))
        files.setdefault("jets", {})[f"/jets/{name}"] = buffer.getvalue()
    monkeypatch.setattr(jets, "ARCHIVES", archives)
    return files


URL_PATH = {"mnist": "/mnist/", "modelnet40": "/ModelNet40.zip", "jets": "/jets/"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_download_ends_in_the_same_split_files_as_the_data_it_fetched(kind, offline, mirror, tmp_path):
    ds = {**OFFLINE[kind], "source": "download"}
    assert source_spec(ds) == {"source": "download"}  # nothing else: a new mirror reruns only the fetch
    with FileServer(mirror[kind]) as server:
        fetched = fetch(kind, ds, tmp_path, url=server.url + URL_PATH[kind])
    assert sorted(path for path, _ in server.requests) == sorted(mirror[kind])
    if KINDS[kind].located is not None:
        assert json.loads(Path(fetched[0]).read_text())["origin"] == "download"
        assert where(kind, fetched).is_relative_to(tmp_path / "raw")
    assert same_splits(prepare(kind, ds, fetched, tmp_path), offline[kind][2])


def test_a_corrupt_mirror_fails_the_fetch_job_and_writes_no_manifest(offline, mirror, tmp_path):
    body = bytearray(mirror["modelnet40"]["/ModelNet40.zip"])
    body[-1] ^= 0xFF
    ds = {**OFFLINE["modelnet40"], "source": "download"}
    with FileServer({"/ModelNet40.zip": bytes(body)}) as server, pytest.raises(ChecksumError):
        fetch("modelnet40", ds, tmp_path, url=server.url + "/ModelNet40.zip")
    assert not (tmp_path / "raw" / MANIFEST).exists()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_local_copy_ends_in_the_same_split_files(kind, offline, mirror, tmp_path):
    ds = {**OFFLINE[kind], "source": "local", "local_dir": str(where(kind, offline[kind][1]))}
    fetched = fetch(kind, ds, tmp_path)
    if KINDS[kind].located is not None:  # read in place
        assert where(kind, fetched) == Path(ds["local_dir"])
    assert same_splits(prepare(kind, ds, fetched, tmp_path), offline[kind][2])


def test_the_local_mnist_files_are_checked_unless_the_config_says_not_to(offline, tmp_path):
    ds = {**OFFLINE["mnist"], "source": "local", "local_dir": str(where("mnist", offline["mnist"][1]))}
    with pytest.raises(ChecksumError):  # the offline digits are not the official files
        fetch("mnist", ds, tmp_path / "checked")
    fetch("mnist", {**ds, "verify_checksums": False}, tmp_path / "unchecked")


def test_each_source_reads_only_its_own_keys():
    for kind, ds in OFFLINE.items():
        desc = KINDS[kind]
        for source in SOURCES:
            spec = source_spec({**ds, "source": source, "url": "https://mirror/"})
            assert set(spec) == {"source", *desc.source_keys[source]}, (kind, source)
        assert dataset_url({**ds, "url": None}) == desc.official_url
        assert dataset_url({**ds, "url": "file:///m/"}) == "file:///m/"
    # a kind's own keys are those no other kind reads
    own = {kind: set(desc.own_keys) for kind, desc in KINDS.items()}
    for kind in KINDS:
        assert own[kind] and not own[kind] & set().union(*(own[k] for k in KINDS if k != kind))


def test_every_kind_names_functions_that_take_what_its_rules_pass():
    for desc in KINDS.values():
        params = dict.fromkeys(desc.prepare_keys) | ({"seed": 0} if desc.prepare_seed else {})
        inspect.signature(desc.function("prepare")).bind(Path("."), {}, 1, **params)
        inspect.signature(desc.function("fetch")).bind({}, Path("."))
        assert desc.size_key in desc.prepare_keys
        assert desc.raw_files and (desc.located is None) == (MANIFEST not in desc.raw_files)
    assert image_side(OFFLINE["mnist"]) == 32 and image_side(OFFLINE["jets"]) is None


def test_the_kinds_and_the_fetch_job_import_no_torch():
    """The Snakefile reads the kinds; the fetch job runs on the submitting host."""
    code = ("import sys; from kdinv.data.kinds import KINDS; import kdinv.data.fetch; "
            "[k.function('fetch') for k in KINDS.values()]; print('torch' in sys.modules)")  # fmt: skip
    scripts = Path(__file__).resolve().parents[3] / "workflow" / "scripts"
    proc = subprocess.run([sys.executable, "-c", code], cwd=scripts, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
