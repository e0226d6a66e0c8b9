"""The workflow on a real SLURM cluster: a single-node cluster on 127.0.0.1 (Debian's slurmctld,
slurmd and munge, two fake GPUs), started by ``start-local-slurm.sh`` beside this file, and the
real snakemake-executor-plugin-slurm through ``profiles/slurm``.

One slice of the demo (the jets row, two folds, one temperature) runs through SLURM while this test
cancels one training job part-way, as a preemption or a node fault would; the profile's retries
resubmit it and it continues from its resume state. The metrics must equal those of the same slice
run locally.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "workflow"))
from test_workflow import ROOT, copy_workflow  # noqa: E402

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

SLICE = {
    "folds": 2,
    "temperatures": [4],
    "device": "auto",  # GPU rules ask for a GPU; the fake GPUs have no CUDA, so torch uses the CPU
    "threads": 1,
    "job_resources": {"mem_mb": 600, "runtime": 10},
    "evaluation": {"batch_size": 1024},
    "datasets": {"jets": {"source": "offline", "offline_files": {"train": 2, "val": 1}, "offline_jets_per_file": 1000}},
    "models": {
        # long enough (tens of seconds) that the test can cancel it part-way
        "jet-deepsets": {
            "params": {"phi": [32, 32, 32], "rho": [32]},
            "training": {"epochs": 40, "batch_size": 16, "lr": 2.9e-3, "patience": None, "eval_batch_size": 4096},
        },
        "jet-deepsets-prime": {"training": {"epochs": 2, "batch_size": 128, "lr": 2.9e-3, "patience": None}},
        "jet-mlp": {
            "params": {"hidden": [32, 32]},
            "training": {"epochs": 3, "batch_size": 128, "lr": 1.5e-3, "patience": None},
            "distillation": {"epochs": 3, "batch_size": 128, "lr": 1.5e-3, "patience": None},
        },
    },
}
CANCELLED = "logs/train_model/jets/jet-deepsets/plain/fold0.log"


def _slurm_available() -> str | None:
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root (it installs Debian packages and writes /etc/slurm)"
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return "neither slurmctld nor apt-get to install it is available"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = _slurm_available()
    if reason:
        pytest.skip(reason)
    script = HERE / "start-local-slurm.sh"
    env = {**os.environ, "LOCAL_SLURM_GPUS": "2", "LOCAL_SLURM_CPUS": "4"}
    proc = subprocess.run(["timeout", "300", "bash", str(script), "start"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"the local SLURM cluster did not start:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    yield
    subprocess.run(["timeout", "60", "bash", str(script), "stop"], env=env, capture_output=True, text=True)


def _slice_workdir(dest: Path) -> Path:
    dest.mkdir(parents=True)
    copy_workflow(dest)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    (dest / "slice.yaml").write_text(
        yaml.safe_dump({**SLICE, "rows": [row for row in config["rows"] if row["name"] == "dsinv-mlp"]})
    )
    return dest


def _cancel_when_running(workdir: Path, deadline: float) -> str:
    """Wait until the watched training has logged an epoch inside a SLURM job, then scancel that
    job (SIGTERM to its steps, SIGKILL after KillWait). Returns the job id."""
    log = workdir / CANCELLED
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        job = re.search(r"SLURM job (\d+)", text)
        if job and "epoch 3/" in text:
            subprocess.run(["scancel", job.group(1)], check=True)
            return job.group(1)
        time.sleep(0.5)
    raise AssertionError(f"{CANCELLED} never showed a running epoch")


def test_a_slice_runs_as_slurm_jobs_survives_a_cancelled_job_and_matches_a_local_run(cluster, tmp_path):
    slurm_dir = _slice_workdir(tmp_path / "slurm")
    local_dir = _slice_workdir(tmp_path / "local")
    cmd = SNAKEMAKE + [
        "--workflow-profile", "profiles/slurm", "--configfile", "slice.yaml", "--jobs", "4",
        "--default-resources", "slurm_partition=debug",
        # the local cluster has no accounting database: poll with squeue, and often (a test)
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "8",
        "--seconds-between-status-checks", "2",
    ]
    proc = subprocess.Popen(
        ["timeout", "-s", "INT", "-k", "30", "900", *cmd], cwd=slurm_dir,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        job = _cancel_when_running(slurm_dir, time.monotonic() + 600)
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-6000:]

    # the cancelled job was reported with its SLURM log and resubmitted; the rerun resumed
    assert re.search(rf"SLURM-job '{job}' failed", out), out[-6000:]
    assert f".snakemake/slurm_logs/rule_train_model/" in out
    log = (slurm_dir / CANCELLED).read_text()  # the resubmitted job's log (Snakemake starts it afresh)
    assert "resuming at epoch" in log
    rerun = re.findall(r"SLURM job (\d+)", log)
    assert len(rerun) == 1 and rerun[0] != job

    # every job but the local fetch ran as a SLURM job, with its SLURM log kept
    log_dir = slurm_dir / ".snakemake/slurm_logs"  # rule_<rule>/[<wildcards>/]<job id>.log
    rules = {p.relative_to(log_dir).parts[0] for p in log_dir.rglob("*.log")}
    assert {"rule_train_model", "rule_distill_student", "rule_evaluate_trained", "rule_evaluate_distilled",
            "rule_prepare_jets", "rule_make_folds"} <= rules
    assert "rule_fetch_jets" not in rules  # a localrule: runs on the submitting host
    # GPU rules got one of the fake GPUs; the preprocessing asked for none
    for train_log in (slurm_dir / "logs/train_model").rglob("*.log"):
        assert re.search(r"SLURM job \d+ on \S+, CUDA_VISIBLE_DEVICES=\d", train_log.read_text()), train_log
    prepare = (slurm_dir / "logs/prepare_jets/jets.log").read_text()
    assert re.search(r"SLURM job \d+ on \S+, CUDA_VISIBLE_DEVICES=$", prepare, re.M), prepare

    # the same slice run locally gives the same metrics
    local = subprocess.run(
        SNAKEMAKE + ["--cores", "2", "--configfile", "slice.yaml"], cwd=local_dir,
        capture_output=True, text=True, timeout=900,
    )
    assert local.returncode == 0, local.stdout[-4000:] + local.stderr[-4000:]
    keys = ["kind", "dataset", "model", "augment", "teacher", "teacher_augment", "temperature", "fold", "symmetry",
            "reference"]
    on_slurm = pd.read_parquet(slurm_dir / "results/metrics.parquet").sort_values(keys).reset_index(drop=True)
    at_home = pd.read_parquet(local_dir / "results/metrics.parquet").sort_values(keys).reset_index(drop=True)
    assert len(on_slurm) == len(at_home) == 4 * 2 + 4 * 2 + 2
    pd.testing.assert_frame_equal(on_slurm, at_home, check_exact=False, atol=1e-5, rtol=0)
