"""Jobs for tests/unit/launch/test_forkserver.py, named as ``forkserver_targets:<function>``; they run in
a child of the fork server or, for comparison, in the client's own process."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def describe(out: str) -> None:
    """Write what the job sees of its process: ids, working directory, environment, streams,
    threads, random state."""
    import numpy
    import torch

    mask = os.umask(0)
    os.umask(mask)
    view = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
        "argv": sys.argv,
        "sys_path": sys.path,
        "umask": mask,
        "affinity": sorted(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "cuda_bad_fork": torch.cuda._is_in_bad_fork(),
        "torch_seed": torch.initial_seed(),
        "numpy_draw": float(numpy.random.random()),
        "stdin": sys.stdin.read(),
    }
    print("a line to stdout")
    print("a line to stderr", file=sys.stderr)  # the log, after start_job
    Path(out).write_text(json.dumps(view))


def fail(message: str) -> None:
    raise ValueError(message)


def exit_with(code: int) -> None:
    sys.exit(code)


def sleep_then_write(seconds: float, out: str) -> None:
    time.sleep(seconds)
    Path(out).write_text("done")
