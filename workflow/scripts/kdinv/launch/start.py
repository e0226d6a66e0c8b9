"""Start-up of a workflow script (logging to the rule's log file, thread count), how a rule's
script runs its job (:func:`run_job`: the library function it names, in a child of the fork
server, :mod:`kdinv.launch.forkserver`, or in the script's own process) and the GPU check and
placement of GPU jobs (:func:`call_job`).

This module imports nothing heavy: a rule's script imports it and hands its job over."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import PurePath


def run_job(target: str, log_path: str, threads: int | None, kwargs: dict, gpu: dict | None = None) -> None:
    """Run one job: :func:`start_job` (``log_path``, ``threads``), then the library function
    ``target`` names (``"module:function"``, e.g. ``"kdinv.jobs:train_model"``) called with
    ``kwargs`` by :func:`call_job` (with ``gpu``, the job's GPU request, :func:`gpu_request`).

    It runs in a child of the fork server (:mod:`kdinv.launch.forkserver`), which has imported torch and
    the library already, unless ``KDINV_FORKSERVER=0``, under SLURM, off Linux or when the server
    cannot be started or reached: then in this process, and the log says why. Either way the job
    sees the same arguments (``kwargs`` reduced to plain values, :func:`plain`), working directory,
    environment and streams. Returns when the job succeeded; otherwise this process ends as the
    job did (its exit status, or the signal that killed it).
    """
    from kdinv.launch import forkserver

    kwargs, gpu = plain(kwargs), plain(gpu, "gpu")
    reason, warn = forkserver.unavailable_reason(), False
    if reason is None:
        try:
            code = forkserver.run_in_server(target, log_path, threads, kwargs, gpu)
        except forkserver.Unavailable as err:
            reason, warn = f"the fork server is unavailable: {err}", True
        else:
            forkserver.exit_like(code)
            return
    function = forkserver.resolve(target)
    log = start_job(log_path, threads)
    (log.warning if warn else log.info)("running in this process (%s)", reason)
    call_job(function, kwargs, gpu)


def gpu_request(snakemake) -> dict:
    """What the script of a job that may use a GPU passes to :func:`run_job` as ``gpu``: whether
    its resources ask the scheduler for a GPU (``asked``), its rule and wildcards (``job``), its
    share of a GPU (``percent``, the ``gpu_percent`` resource) and the config's ``local_gpus``."""
    return dict(asked=asked_for_gpu(snakemake.resources), job=job_label(snakemake),
                percent=snakemake.resources.get("gpu_percent", 0), local_gpus=snakemake.config["local_gpus"])


def call_job(function, kwargs: dict, gpu: dict | None = None) -> None:
    """Call ``function(**kwargs)``: the job, in the process it runs in. With ``gpu``
    (:func:`gpu_request`) it first fails at once if a SLURM job given a GPU cannot see it
    (:func:`require_visible_gpu`) and, in a local run on a workstation with several GPUs, holds
    its share of one of them while it runs (:func:`kdinv.launch.gpus.placed_on_gpu`)."""
    if gpu is None:
        function(**kwargs)
        return
    from kdinv.launch.gpus import LEDGER, machine_gpus, placed_on_gpu

    device = kwargs["device"]
    require_visible_gpu(device, gpu["asked"], gpu["job"])
    placement = None
    if device != "cpu" and "SLURM_JOB_ID" not in os.environ:
        placement = {"gpus": machine_gpus(gpu["local_gpus"]), "percent": gpu["percent"], "ledger": LEDGER}
    with placed_on_gpu(placement, device, gpu["job"]):
        function(**kwargs)


def plain(value, where: str = "kwargs"):
    """``value`` as plain Python values (str, int, float, bool, None, lists, tuples and dicts of
    them; paths become str): what a job receives, in the fork server's child as in a direct run.
    Snakemake's file and list types become str and list."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, PurePath):
        return os.fspath(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {plain(k, where): plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where}: a job takes plain values, not {type(value).__name__} ({value!r})")


def start_job(log_path: str, threads: int | None = None) -> logging.Logger:
    """Send logging and stderr to ``log_path`` and cap torch's threads at the job's ``threads``.

    Also sets ``CUBLAS_WORKSPACE_CONFIG`` (unless the environment has it), which cuBLAS needs for
    deterministic results once CUDA starts (:func:`kdinv.training.seed_everything`)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    handle = open(log_path, "a", buffering=1)  # noqa: SIM115 - the job's log, open for its life
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


def asked_for_gpu(resources) -> bool:
    """Whether a job's Snakemake resources ask the scheduler for a GPU: a whole one (``gpu``) or a
    share (``gres`` gpu or shard)."""
    gres = str(resources.get("gres", "") or "")
    return int(resources.get("gpu", 0) or 0) > 0 or "gpu" in gres or "shard" in gres


def job_label(snakemake) -> str:
    """A job's rule and wildcards, e.g. ``train_model dataset=jets model=jet-mlp ...``, for messages."""
    return f"{snakemake.rule} " + " ".join(f"{k}={v}" for k, v in snakemake.wildcards.items())


def require_visible_gpu(device: str, asked: bool, job: str) -> None:
    """Fail at once when a SLURM job that was given a GPU cannot use it.

    With ``device`` auto (or cuda) such a job would otherwise train on the CPU, many times slower,
    until its time limit, and again on every retry. ``asked``: the job's resources ask for a GPU
    (:func:`asked_for_gpu`); ``job``: the rule and wildcards, for the message. Outside SLURM (a
    workstation without a GPU) ``auto`` keeps meaning the CPU when there is no GPU.
    """
    if device != "cpu" and asked and "SLURM_JOB_ID" in os.environ:
        import torch  # only jobs that ask for a GPU get here, and their environments have torch

        if not torch.cuda.is_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise RuntimeError(
                f"{job}: SLURM job {os.environ['SLURM_JOB_ID']} on "
                f"{os.environ.get('SLURMD_NODENAME', '?')} was given a GPU (CUDA_VISIBLE_DEVICES="
                f"{'unset' if visible is None else repr(visible)}) but torch {torch.__version__} (CUDA "
                f"build: {torch.version.cuda}) sees no CUDA device, so it stops instead of training "
                f"with device {device!r} on the CPU. Check that the node's NVIDIA driver works "
                "(nvidia-smi in a job) and that the environment has a CUDA build of torch "
                "(docs/cluster.md)."
            )
