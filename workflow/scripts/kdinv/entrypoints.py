"""What each rule's job runs, with paths and plain values: one function per script of
``workflow/scripts``. A script reads its ``snakemake`` object into keyword arguments and hands them,
with the name of its function here, to :func:`kdinv.runtime.run_job`, which calls the function
after :func:`kdinv.runtime.start_job` in a child of the fork server or in the script's process.

Each function imports what it needs when it runs, so a job run in the script's own process
imports only that.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("kdinv")


def _check_gpu(kwargs: dict) -> None:
    """Take ``gpu_check`` (``asked``: the job's resources ask for a GPU; ``job``: its label) out of
    ``kwargs`` and fail at once if a SLURM job given a GPU cannot see it
    (:func:`kdinv.runtime.require_visible_gpu`)."""
    from kdinv.runtime import require_visible_gpu

    check = kwargs.pop("gpu_check", None)
    if check is not None:
        require_visible_gpu(kwargs["device"], check["asked"], check["job"])


def _on_gpu(kwargs: dict):
    """The job's GPU check, then the context in which it runs on its GPU of a local run: it takes
    ``gpu_placement`` (``percent``: the job's GPU share; ``local_gpus``: the config's setting) out
    of ``kwargs`` and, on a workstation with several GPUs, holds its share of one of them for the
    job (:func:`kdinv.gpus.placed_on_gpu`)."""
    import os

    from kdinv.gpus import LEDGER, machine_gpus, placed_on_gpu

    placement = kwargs.pop("gpu_placement", None)
    name = (kwargs.get("gpu_check") or {}).get("job", "job")
    _check_gpu(kwargs)
    if placement is not None and kwargs["device"] != "cpu" and "SLURM_JOB_ID" not in os.environ:
        placement = {"gpus": machine_gpus(placement["local_gpus"]), "percent": placement["percent"],
                     "ledger": LEDGER}
    else:
        placement = None
    return placed_on_gpu(placement, kwargs["device"], name)


def train_model(**kwargs) -> None:
    """Rule train_model: :func:`kdinv.jobs.train_model`."""
    from kdinv.jobs import train_model as train

    with _on_gpu(kwargs):
        log.info("seed %d", kwargs["seed"])
        train(**kwargs)


def distill_student(**kwargs) -> None:
    """Rule distill_student: :func:`kdinv.jobs.distill_student`."""
    from kdinv.jobs import distill_student as distill

    with _on_gpu(kwargs):
        log.info("seed %d, T %g, recipe %s", kwargs["seed"], kwargs["temperature"], kwargs["recipe"])
        distill(**kwargs)


def evaluate_models(**kwargs) -> None:
    """Rules evaluate_trained and evaluate_distilled: :func:`kdinv.evaluation.evaluate_runs`."""
    from kdinv.evaluation import evaluate_runs

    with _on_gpu(kwargs):
        table = evaluate_runs(**kwargs)
    log.info("%d rows for %d runs", len(table), len(kwargs["runs"]))


def make_folds(train: str, k: int, seed: int, outputs: list[str], scaling) -> None:
    """Rule make_folds: stratified k folds of the training split."""
    from kdinv.data.splits import write_folds

    write_folds(train, k, seed, outputs, scaling=scaling)
    log.info("wrote %d folds (seed %d)", k, seed)


def prepare_mnist(raw_file: str, pad_to: int, out_train: str, out_test: str) -> None:
    """Rule prepare_mnist: the raw IDX files beside ``raw_file`` -> the split files."""
    from kdinv.data.mnist import preprocess_mnist
    from kdinv.data.splits import save_split

    data = preprocess_mnist(Path(raw_file).parent, pad_to=pad_to)
    classes = [str(d) for d in range(10)]
    save_split(data["train_x"], data["train_y"], 10, out_train, classes=classes)
    save_split(data["test_x"], data["test_y"], 10, out_test, classes=classes)
    log.info("train %s, test %s", data["train_x"].shape, data["test_x"].shape)


def prepare_modelnet40(manifest: str, num_points: int, seed: int, processes: int, outputs: dict[str, str]) -> None:
    """Rule prepare_modelnet40: meshes -> normalised point clouds, ``outputs`` by split."""
    from kdinv.data.modelnet import prepare_modelnet
    from kdinv.data.splits import save_split
    from kdinv.runtime import read_source_manifest

    source = read_source_manifest(manifest)
    log.info("sampling %d points per mesh of %s with %d processes", num_points, source, processes)
    data = prepare_modelnet(source, num_points, seed, processes=processes)
    classes = data["classes"]
    for split in ("train", "test"):
        x, y = data[split]
        save_split(x, y, len(classes), outputs[split], classes=list(classes))
        log.info("%s: %s points, %d classes", split, x.shape, len(classes))


def prepare_jets(manifest: str, n_constituents: int, pt_min: float, outputs: dict[str, str]) -> None:
    """Rule prepare_jets: h5 files -> (pT, eta_rel, phi_rel) of the leading constituents."""
    from kdinv.data.jets import CLASSES, list_h5_files, preprocess_jets
    from kdinv.data.splits import save_split
    from kdinv.runtime import read_source_manifest

    files = list_h5_files(read_source_manifest(manifest))
    for split in ("train", "test"):
        x, y = preprocess_jets(files[split], n_constituents=n_constituents, pt_min=pt_min)
        save_split(x, y, len(CLASSES), outputs[split], classes=list(CLASSES))
        log.info("%s: %d files -> %s", split, len(files[split]), x.shape)


def plot_curves(checkpoints: list[str], out_table: str, out_png: str, out_pdf: str) -> None:
    """Rule plot_curves: the per-epoch histories of every checkpoint, as a table and a figure."""
    from kdinv.analysis.curves import curves_table, plot_curves as plot

    curves = curves_table(checkpoints)
    tmp = Path(out_table).with_suffix(".tmp.parquet")
    curves.to_parquet(tmp, index=False)
    tmp.replace(out_table)
    plot(curves, out_png, out_pdf)
    log.info("%d epochs of %d runs", len(curves), curves["run"].nunique())


def collect_metrics(tables: list[str], out: str) -> None:
    """Rule collect_metrics: every per-model table into one."""
    from kdinv.analysis.tables import collect_metrics as collect

    table = collect(tables, out)
    log.info("collected %d rows from %d files", len(table), len(tables))


def plot_figure1(**kwargs) -> None:
    """Rule plot_figure1: :func:`kdinv.analysis.figures.plot_figure1`."""
    from kdinv.analysis.figures import plot_figure1 as plot

    plot(**kwargs)


def plot_tradeoff(**kwargs) -> None:
    """Rule plot_tradeoff: :func:`kdinv.analysis.figures.plot_tradeoff`."""
    from kdinv.analysis.figures import plot_tradeoff as plot

    plot(**kwargs)


def plot_measures(**kwargs) -> None:
    """Rule plot_measures: :func:`kdinv.analysis.figures.plot_measures`."""
    from kdinv.analysis.figures import plot_measures as plot

    plot(**kwargs)


def write_findings(**kwargs) -> None:
    """Rule findings: :func:`kdinv.analysis.findings.write_findings`."""
    from kdinv.analysis.findings import write_findings as write

    findings = write(**kwargs)
    log.info("%d comparisons written", len(findings))


def write_row_tables(**kwargs) -> None:
    """Rule row_tables: :func:`kdinv.analysis.tables.write_row_tables`."""
    from kdinv.analysis.tables import write_row_tables as write

    paths = write(**kwargs)
    log.info("wrote %s", ", ".join(map(str, paths)))
