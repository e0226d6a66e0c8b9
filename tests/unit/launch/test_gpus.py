"""A workstation with several GPUs: concurrent jobs of a local run spread over all of them, each
GPU holding at most its share (kdinv/launch/gpus.py), and the workflow lets as many run as the GPUs hold."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

from kdinv.launch.gpus import GpuLedger, machine_gpus, placed_on_gpu


def test_machine_gpus_from_the_environment_the_probe_or_the_setting():
    assert machine_gpus("auto", env={"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert machine_gpus("auto", env={"CUDA_VISIBLE_DEVICES": ""}) == []
    assert machine_gpus("auto", env={}, probe=lambda: 4) == ["0", "1", "2", "3"]
    assert machine_gpus(2, env={}, probe=lambda: 4) == ["0", "1"]
    assert machine_gpus(1, env={"CUDA_VISIBLE_DEVICES": "5,6"}) == ["5"]
    assert machine_gpus(3, env={}, probe=lambda: 0) == ["0", "1", "2"]  # nothing found: the setting
    assert machine_gpus("auto", env={}, probe=lambda: 0) == []


def _job(ledger_path, gpus, percent, hold, out, name):
    """One concurrent job: holds its share for ``hold`` seconds and writes where and when."""
    ledger = GpuLedger(ledger_path, gpus)
    with ledger.slot(percent, name, poll_seconds=0.02) as gpu:
        start = time.monotonic()
        time.sleep(hold)
        end = time.monotonic()
    with open(out, "a") as f:
        f.write(json.dumps({"gpu": gpu, "percent": percent, "start": start, "end": end}) + "\n")


def test_concurrent_jobs_land_on_both_gpus_never_above_a_gpus_share(tmp_path):
    """Ten jobs at once on a 2-GPU machine, halves and quarters and whole GPUs mixed: both GPUs
    are used, and at no moment do the jobs on one GPU hold more than 100 % of it."""
    ledger, out = tmp_path / "gpus.json", tmp_path / "out.jsonl"
    shares = [50, 50, 100, 25, 25, 25, 25, 50, 100, 50]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_job, args=(ledger, ["0", "1"], p, 0.3, out, f"job{i}"))
             for i, p in enumerate(shares)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(runs) == len(shares)
    assert {r["gpu"] for r in runs} == {"0", "1"}
    for r in runs:  # at each job's start, the load of its GPU
        load = sum(o["percent"] for o in runs if o["gpu"] == r["gpu"] and o["start"] <= r["start"] < o["end"])
        assert load <= 100, (r, runs)
    # they ran concurrently: well under the 3 s that one after another would take
    assert max(r["end"] for r in runs) - min(r["start"] for r in runs) < 0.3 * len(shares) * 0.75
    assert json.loads(ledger.read_text()) == {}  # every share was given back


def test_a_killed_jobs_share_is_taken_back(tmp_path):
    ledger = GpuLedger(tmp_path / "gpus.json", ["0"])
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_job, args=(tmp_path / "gpus.json", ["0"], 100, 60, tmp_path / "o", "killed"))
    child.start()
    for _ in range(200):
        if ledger.load()["0"] == 100:
            break
        time.sleep(0.02)
    assert ledger.try_take(50, "other") is None  # the GPU is full
    child.kill()
    child.join()
    assert ledger.try_take(50, "other") == "0"  # the dead job's entry is dropped


def test_placement_sets_the_jobs_gpu_and_only_where_it_should(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    placement = {"gpus": ["4", "7"], "percent": 100, "ledger": tmp_path / "gpus.json"}
    with placed_on_gpu(placement, "cuda", "a") as first, placed_on_gpu(placement, "cuda", "b") as second:
        assert (first, second) == ("4", "7") and os.environ["CUDA_VISIBLE_DEVICES"] == "7"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,7"  # restored
    with placed_on_gpu(placement, "cpu", "c") as gpu:
        assert gpu is None  # a CPU job takes no GPU
    with placed_on_gpu({**placement, "gpus": ["4"]}, "cuda", "d") as gpu:
        assert gpu is None  # one GPU: nothing to choose
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    with placed_on_gpu(placement, "cuda", "e") as gpu:
        assert gpu is None  # SLURM gives the job its GPU


def test_a_job_called_with_its_gpu_request_runs_on_its_gpu(tmp_path, monkeypatch):
    """Called by the launch machinery with its GPU request, a job sees CUDA_VISIBLE_DEVICES set
    to the GPU it holds, and the share is back in the ledger once it ends."""
    from kdinv.launch.start import call_job

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    seen = []
    def job(**kw):
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])

    GpuLedger(".snakemake/kdinv-gpus.json", ["0", "1"]).try_take(100, "busy")  # GPU 0 is held
    call_job(job, dict(seed=1, device="cuda"),
             dict(asked=True, job="train_model x", percent=50, local_gpus="auto"))
    assert seen == ["1"] and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    call_job(job, dict(seed=1, device="cpu"), dict(asked=False, job="train_model y", percent=0, local_gpus="auto"))
    assert seen == ["1", "0,1"]  # a CPU job is placed nowhere
    assert GpuLedger(".snakemake/kdinv-gpus.json", ["0", "1"]).load() == {"0": 100, "1": 0}
