"""Start-up of a workflow script: logging to the rule's log file, thread count."""

from __future__ import annotations

import logging
import sys


def start_job(log_path: str, threads: int | None = None) -> logging.Logger:
    """Send logging and stderr to ``log_path`` and cap torch's threads at the job's ``threads``."""
    handle = open(log_path, "a", buffering=1)
    sys.stderr = handle
    logging.basicConfig(
        stream=handle,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return logging.getLogger("kdinv")
