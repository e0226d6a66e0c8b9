"""The dataset kinds, each described once: what the config's ``datasets.<name>.kind`` can be.

A :class:`DatasetKind` holds everything the rest of the workflow needs to know about a kind: the
config keys each source reads, the files its fetch job writes, the config keys and resources of
its prepare job, the sizes of its training split, and the functions that fetch and prepare it
(named ``"module:function"``, imported only when a job runs them). The config checks
(:mod:`kdinv.config`), the rules (``rules/data.smk``, ``rules/common.smk``), the one fetch and
the one prepare script (:mod:`kdinv.data.fetch`, :mod:`kdinv.data.prepare`) and the benchmarks
read it.

Imports no torch (nor numpy): the Snakefile reads it while it builds the DAG.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

SOURCES = ("download", "local", "offline")
"""The values of ``datasets.<name>.source`` (docs/data.md, "Sources")."""


@dataclass(frozen=True)
class DatasetKind:
    """One kind of dataset.

    Attributes:
        name: the config's ``kind`` (also in the rules' names: ``fetch_<name>``, ``prepare_<name>``).
        title: how the fetch job's log names the data.
        data: the input kind its samples are (:data:`kdinv.symmetry.catalog.INPUT_KINDS`), which
            decides the models that read it and the transforms that act on it.
        classes: the number of classes of the real data.
        official_url: where source ``download`` fetches from when ``url`` is null.
        source_keys: per source, the dataset keys its fetch job reads (besides ``source``, and
            ``url`` or the derived seed that every kind's download or offline source gets). Only
            these enter the fetch job's params, so that e.g. a new mirror URL does not rerun an
            offline data set and its whole downstream.
        prepare_keys: the dataset keys the prepare job reads, each passed as a param of that name.
        prepare_seed: the label of the prepare job's seed (a param ``seed`` derived from the
            config's seed, this label and the dataset's name), or None when it draws nothing.
        size_key: the key that sets a sample's size (named by the memory check's message).
        raw_files: the fetch job's outputs, in ``resources/<dataset>/raw/``. ``source.json``
            (:func:`kdinv.data.fetch.write_source_manifest`) names where the data are, for data too
            large to be declared outputs (a partial download would be deleted by Snakemake).
        located: what ``source.json`` points at, for the fetch job's log (None: no manifest).
        train_size: samples of the real training split.
        offline_train_size: samples of the offline training split, from the dataset's entry.
        sample_shape: the shape of one prepared sample, from the dataset's entry.
        fetch: ``"module:function"``, ``function(spec, raw) -> Path | None``: the fetch job for
            every source (``spec``: :func:`fetch_spec`'s keys; ``raw``: the folder of the raw files),
            which returns where the data are when the kind has a manifest. Runs on the submitting
            host, so it must not import torch.
        prepare: ``"module:function"``, ``function(source, outputs, processes, **params)``: the
            prepare job, from the fetched data (``source``: the manifest's path, or the folder of
            ``raw_files``) to the split files ``outputs["train"]``, ``outputs["test"]``
            (:func:`kdinv.data.splits.save_split`).
        prepare_threads, prepare_mem_mb, prepare_runtime: the prepare job's resources (threads:
            the processes it may use; Snakemake lowers them to the cores it has).
    """

    name: str
    title: str
    data: str
    classes: int
    official_url: str
    source_keys: Mapping[str, tuple[str, ...]]
    prepare_keys: tuple[str, ...]
    size_key: str
    raw_files: tuple[str, ...]
    train_size: int
    offline_train_size: Callable[[dict], float]
    sample_shape: Callable[[dict], tuple[int, ...]]
    fetch: str
    prepare: str
    prepare_seed: str | None = None
    located: str | None = None
    prepare_threads: int = 1
    prepare_mem_mb: int = 4000
    prepare_runtime: int = 20

    def function(self, role: str) -> Callable:
        """The function of ``role`` (``"fetch"`` or ``"prepare"``), imported now."""
        module, _, name = getattr(self, role).partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def own_keys(self) -> tuple[str, ...]:
        """The dataset keys that only this kind reads: setting one for another kind is an error."""
        keys = [k for source in SOURCES for k in self.source_keys[source] if k not in SHARED_KEYS]
        return (*dict.fromkeys(keys), *self.prepare_keys)


SHARED_KEYS = ("local_dir",)
"""Dataset keys that a source of every kind reads."""
MANIFEST = "source.json"


def _mnist_offline_train(ds: dict) -> float:
    # scikit-learn's 1,797 digits, less the test share (kdinv.data.offline.mnist)
    return 1797 * (1 - ds["offline_test_fraction"])


KINDS: dict[str, DatasetKind] = {
    kind.name: kind
    for kind in (
        DatasetKind(
            name="mnist",
            title="MNIST",
            data="image",
            classes=10,
            official_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
            source_keys={
                "download": (),
                "local": ("local_dir", "verify_checksums"),
                "offline": ("offline_test_fraction",),
            },
            prepare_keys=("pad_to",),
            size_key="pad_to",
            raw_files=(
                "train-images-idx3-ubyte.gz",
                "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
            ),
            train_size=60_000,
            offline_train_size=_mnist_offline_train,
            sample_shape=lambda ds: (1, ds["pad_to"], ds["pad_to"]),
            fetch="kdinv.data.mnist:fetch_mnist",
            prepare="kdinv.data.mnist:write_mnist_splits",
            prepare_runtime=20,
        ),
        DatasetKind(
            name="modelnet40",
            title="ModelNet40",
            data="point_cloud",
            classes=40,
            official_url="http://modelnet.cs.princeton.edu/ModelNet40.zip",
            source_keys={
                "download": (),
                "local": ("local_dir",),
                "offline": ("offline_train_per_class", "offline_test_per_class"),
            },
            prepare_keys=("num_points",),
            prepare_seed="sample-points",
            size_key="num_points",
            # The 2 GB zip is not a declared output: a download cut short keeps its partial file
            # for the next attempt, which Snakemake would delete. source.json names the zip, the
            # local tree or zip, or the generated tree.
            raw_files=(MANIFEST,),
            located="meshes",
            train_size=9_843,
            # eight shape classes (kdinv.data.offline.modelnet)
            offline_train_size=lambda ds: 8 * ds["offline_train_per_class"],
            sample_shape=lambda ds: (ds["num_points"], 3),
            fetch="kdinv.data.modelnet:fetch_modelnet",
            prepare="kdinv.data.modelnet:write_modelnet_splits",
            # meshes are read and sampled in parallel
            prepare_threads=8,
            prepare_runtime=120,
        ),
        DatasetKind(
            name="jets",
            title="the jets",
            data="set",
            classes=5,
            official_url="https://zenodo.org/records/3602260/files/",
            source_keys={
                "download": (),
                "local": ("local_dir",),
                "offline": ("offline_files", "offline_jets_per_file"),
            },
            prepare_keys=("n_constituents", "pt_min"),
            size_key="n_constituents",
            # As for ModelNet40: the archives and the extracted h5 files are not declared outputs.
            raw_files=(MANIFEST,),
            located="h5 files",
            # the 150p train archive holds about 630,000
            train_size=630_000,
            offline_train_size=lambda ds: ds["offline_files"]["train"] * ds["offline_jets_per_file"],
            sample_shape=lambda ds: (ds["n_constituents"], 3),
            fetch="kdinv.data.jets:fetch_jets",
            prepare="kdinv.data.jets:write_jets_splits",
            prepare_runtime=60,
        ),
    )
}
"""Every dataset kind by its name (the schema's ``kind`` enum)."""


def dataset_kind(dataset: dict) -> DatasetKind:
    """The kind of a dataset entry of the config."""
    return KINDS[dataset["kind"]]


def dataset_url(dataset: dict) -> str:
    """Where source download fetches a dataset from: its ``url``, or the kind's official one."""
    return dataset.get("url") or dataset_kind(dataset).official_url


def split_sizes(dataset: dict) -> tuple[int, int]:
    """(samples of the training split, floats per sample) a dataset's preparation will write."""
    kind = dataset_kind(dataset)
    n = kind.offline_train_size(dataset) if dataset["source"] == "offline" else kind.train_size
    return math.ceil(n), math.prod(kind.sample_shape(dataset))


def image_side(dataset: dict) -> int | None:
    """The side of a dataset's square images after preprocessing (None: not images)."""
    kind = dataset_kind(dataset)
    return kind.sample_shape(dataset)[-1] if kind.data == "image" else None


def source_spec(dataset: dict) -> dict:
    """The dataset keys its source reads (:attr:`DatasetKind.source_keys`), with ``source``."""
    source = dataset["source"]
    return {"source": source, **{k: dataset[k] for k in dataset_kind(dataset).source_keys[source]}}
