"""Which GPU of a workstation a job runs on: concurrent jobs of one local run spread over all the
machine's GPUs, each GPU holding at most its share (``jobs_per_gpu``) of them.

Snakemake caps the sum of the running jobs' ``gpu_percent`` at 100 per GPU (the Snakefile raises
the default profile's cap of one GPU to ``100 × GPUs``), but it does not say *which* GPU a job gets.
:class:`GpuLedger` does, when the job starts: a small file beside the workflow's own state
(``.snakemake/kdinv-gpus.json``), locked while it is read and written, lists the running jobs, their
GPU and their share; a job takes the least loaded GPU with room for its share and sets
``CUDA_VISIBLE_DEVICES`` to it before CUDA starts, so its ``cuda`` is that GPU. An entry of a
process that no longer exists (a killed job) is dropped by the next job that reads the ledger.
When Snakemake's cap lets a job start that fits on no single GPU (two half jobs on two GPUs, then a
whole one), the job waits for room, and the log says so.

Jobs under SLURM never use it: SLURM gives each job its GPU. This module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

LEDGER = ".snakemake/kdinv-gpus.json"
"""Where a local run keeps its GPU ledger, relative to the workflow's working directory."""


def machine_gpus(setting="auto", env=None, probe=None) -> list[str]:
    """The GPUs a local run spreads its jobs over, as the ids ``CUDA_VISIBLE_DEVICES`` takes.

    ``setting``: the config's ``local_gpus``: ``"auto"``, those ``CUDA_VISIBLE_DEVICES`` lists when
    it is set, else every GPU ``nvidia-smi -L`` lists (none when it is missing or fails); or an
    integer n, the first n of those (0 .. n−1 when none is found). ``probe`` replaces nvidia-smi
    (tests)."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
    else:
        count = (probe or _nvidia_smi_count)()
        ids = [str(i) for i in range(count)]
    if setting == "auto":
        return ids
    n = int(setting)
    return ids[:n] if ids else [str(i) for i in range(n)]  # none found: trust the setting


def _nvidia_smi_count() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU ")) if out.returncode == 0 else 0


def _alive(pid: int, started: str) -> bool:
    """Whether process ``pid`` still runs and is the one that started at ``started`` (a reused
    pid is another process)."""
    return _start_time(pid) == started


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return "?"  # no /proc: the pid alone
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime


class GpuLedger:
    """The running jobs of one local run and the GPU each holds (module docstring).

    Args:
        path: the ledger file (its lock is ``<path>.lock``).
        gpus: the ids of the GPUs to spread over (:func:`machine_gpus`).
    """

    def __init__(self, path: str | Path, gpus: list[str]):
        if not gpus:
            raise ValueError("a GPU ledger needs at least one GPU")
        self.path = Path(path)
        self.gpus = list(gpus)

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entries = json.loads(self.path.read_text()) if self.path.exists() else {}
                entries = {k: e for k, e in entries.items() if _alive(e["pid"], e["started"])}
                yield entries
                tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
                tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
                os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load(self) -> dict[str, int]:
        """GPU id -> the percent of it the running jobs hold."""
        with self._locked() as entries:
            return self._loads(entries)

    def _loads(self, entries) -> dict[str, int]:
        used = {g: 0 for g in self.gpus}
        for e in entries.values():
            if e["gpu"] in used:
                used[e["gpu"]] += e["percent"]
        return used

    def try_take(self, percent: int, key: str) -> str | None:
        """Take ``percent`` of the least loaded GPU with room for it, for the process of this
        call under ``key``; None when no GPU has room."""
        with self._locked() as entries:
            used = self._loads(entries)
            room = [g for g in self.gpus if used[g] + percent <= 100]
            if not room:
                return None
            gpu = min(room, key=lambda g: (used[g], self.gpus.index(g)))
            entries[key] = {"gpu": gpu, "percent": percent, "pid": os.getpid(),
                            "started": _start_time(os.getpid())}  # fmt: skip
            return gpu

    def release(self, key: str) -> None:
        with self._locked() as entries:
            entries.pop(key, None)

    @contextlib.contextmanager
    def slot(self, percent: int, name: str, poll_seconds: float = 1.0):
        """Hold ``percent`` of one GPU for the block; yields its id. Waits (polling) while no GPU
        has room for the share."""
        percent = max(1, min(100, int(percent)))
        key = f"{os.getpid()}:{name}"
        gpu, waited = self.try_take(percent, key), False
        while gpu is None:
            if not waited:
                log.info("%s: waiting for %d%% of a GPU (%s in use)", name, percent, self.load())
                waited = True
            time.sleep(poll_seconds)
            gpu = self.try_take(percent, key)
        try:
            yield gpu
        finally:
            self.release(key)


@contextlib.contextmanager
def placed_on_gpu(placement: dict | None, device: str, name: str):
    """The block runs on one GPU of the local machine: ``CUDA_VISIBLE_DEVICES`` names the one the
    ledger gives it, for the block (:class:`GpuLedger`).

    ``placement``: ``{"gpus": [ids], "percent": share, "ledger": path}`` from the rule, or None;
    nothing is done on the CPU (``device == "cpu"``), under SLURM, with one GPU or none, or
    for a job that asks for no GPU share."""
    if (placement is None or device == "cpu" or "SLURM_JOB_ID" in os.environ
            or len(placement["gpus"]) < 2 or not placement["percent"]):
        yield None
        return
    ledger = GpuLedger(placement["ledger"], placement["gpus"])
    with ledger.slot(placement["percent"], name) as gpu:
        previous = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        log.info("%s: on GPU %s (%d%% of it; %d GPUs in this run)", name, gpu, placement["percent"],
                 len(placement["gpus"]))
        try:
            yield gpu
        finally:
            if previous is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = previous
