"""Start-up of a workflow script (logging to the rule's log file, thread count) and the small
``source.json`` manifests of the fetch rules."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path


def start_job(log_path: str, threads: int | None = None) -> logging.Logger:
    """Send logging and stderr to ``log_path`` and cap torch's threads at the job's ``threads``.

    Also sets ``CUBLAS_WORKSPACE_CONFIG`` (unless the environment has it), which cuBLAS needs for
    deterministic results once CUDA starts (:func:`kdinv.training.seed_everything`)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    handle = open(log_path, "a", buffering=1)
    sys.stderr = handle
    logging.basicConfig(
        stream=handle,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    log = logging.getLogger("kdinv")
    if "SLURM_JOB_ID" in os.environ:  # where a cluster job ran, for its log
        log.info(
            "SLURM job %s on %s, CUDA_VISIBLE_DEVICES=%s",
            os.environ["SLURM_JOB_ID"],
            os.environ.get("SLURMD_NODENAME", "?"),
            os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        )
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return log


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
