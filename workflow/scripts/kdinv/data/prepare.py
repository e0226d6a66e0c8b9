"""The prepare job of every dataset kind: the fetched data -> the common split files,
``results/<dataset>/data/{train,test}.pt`` (:func:`kdinv.data.splits.save_split`)."""

from __future__ import annotations

from pathlib import Path

from kdinv.data.kinds import KINDS


def prepare_dataset(kind: str, fetched: list[str], outputs: dict[str, str], processes: int, params: dict) -> None:
    """Rule ``prepare_<kind>``: the kind's prepare function
    (:attr:`~kdinv.data.kinds.DatasetKind.prepare`) from the fetch job's outputs ``fetched``
    (the data that ``source.json`` names, or the folder of the raw files) to the split files
    ``outputs`` (by split), in up to ``processes`` processes, with the prepare rule's ``params``
    (:attr:`~kdinv.data.kinds.DatasetKind.prepare_keys` and ``seed``) as keyword arguments."""
    from kdinv.data.fetch import read_source_manifest

    desc = KINDS[kind]
    source = read_source_manifest(fetched[0]) if desc.located is not None else Path(fetched[0]).parent
    desc.function("prepare")(source, outputs, processes, **params)
