"""The fetch job of every dataset kind: the raw files from the configured source.

Runs in the fetch rule's own process on the submitting host (``localrules``: compute nodes often
have no internet), so it imports no torch.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from kdinv.data.kinds import KINDS

log = logging.getLogger("kdinv")


def fetch_dataset(kind: str, spec: dict, outputs: list[str]) -> None:
    """Rule ``fetch_<kind>``: fetch a dataset of ``kind`` from the source ``spec`` describes
    (``source`` and the keys it reads; ``url`` for download, ``seed`` for offline) into the folder
    of ``outputs``, the rule's outputs (:attr:`~kdinv.data.kinds.DatasetKind.raw_files`).

    The kind's fetch function (:attr:`~kdinv.data.kinds.DatasetKind.fetch`) writes the raw files;
    for a kind with a manifest, ``source.json`` then names where the data are.
    """
    desc = KINDS[kind]
    raw = Path(outputs[0]).parent
    log.info("fetching %s into %s: %s", desc.title, raw, spec)
    source = desc.function("fetch")(spec, raw)
    if desc.located is not None:
        write_source_manifest(outputs[0], source, origin=spec["source"])
        log.info("%s at %s", desc.located, source)


def write_source_manifest(path: str, source: str | Path, **extra) -> None:
    """Write ``source.json`` (what a prepare rule reads: ``{"source": <path>, ...}``) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"source": str(source), **extra}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_source_manifest(path: str | Path) -> Path:
    data = json.loads(Path(path).read_text())
    source = Path(data["source"])
    if not source.exists():
        raise FileNotFoundError(
            f"{path}: names {source}, which no longer exists; delete {path} to fetch the data again"
        )
    return source
