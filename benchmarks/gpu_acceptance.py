"""GPU acceptance: one command that shows the workflow runs on a GPU, and measures it.

    python benchmarks/gpu_acceptance.py                 # on a machine with one CUDA GPU, < 8 min
    python benchmarks/gpu_acceptance.py --device cpu --quick   # the same checks on the CPU (CI)

Checks, in this order (each under a time limit; the exit status is non-zero when one fails):

(a) ``demo``: the demo config end to end with ``device: <device>`` (float32), in a fresh copy of
    the workflow; every job succeeds and every training, distillation and evaluation log says it
    ran on the device. At the same time the same config runs with ``device: cpu`` in another copy.
(b) ``cpu_vs_device``: the two metric tables, per (row, model, role, recipe, T): the fold mean of
    each metric. A GPU trains with other rounding than a CPU, and the demo's small trainings
    amplify rounding into different weights, so the tables cannot match to the bit. Tolerance:
    accuracy within max(0.05, 3 × the CPU run's fold standard deviation) -- the spread the folds
    already show, with a floor of 5 points for models whose folds agree by chance; the other
    metrics are reported. (Every teacher passed the gate on both, or a distillation had failed.)
(c) ``bf16``: the demo with ``precision: bf16`` on the device (at the same time as (a)); its
    table against (a)'s, reported with the same tolerance but not enforced (bf16 changes rounding
    more than the device does).
(d) ``resume``: a training killed with SIGKILL after its second epoch and run again resumes and
    ends with a checkpoint bit-identical to an uninterrupted run's on the device.
(e) ``epochs`` and ``sharing``: epoch times per model (benchmarks/run.py --epochs-table, paper
    scale, with the grid's GPU-hours) in float32 and bf16, and two trainings sharing one device
    against one alone (throughput, peak memory). (d) and (e) run alone on the device.

On a GPU the whole run has a budget of 480 s (``--budget``): each check's time limit is cut to
what is left of it, and a run that ends past it fails its ``total`` line. A check that runs out
of time is stopped with SIGTERM first, so benchmarks/run.py still writes what it measured.

Writes ``<out>/acceptance-<device>.csv`` (check, item, value, limit, ok) and ``<out>/acceptance-
<device>.md`` (a summary), by default under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "rules", "workflow", "envs", "profiles", "config.yaml", "config.demo.yaml"]
METRICS = ["accuracy", "nll", "ece", "agreement", "kl", "im"]
NOT_KEYS = {*METRICS, "fold", "n_test", "val_accuracy", "val_im"}
# The CPU path of CI (--quick): the demo's MNIST row alone, 2 folds, T = 4, short trainings.
QUICK = {
    "folds": 2, "temperatures": [4],
    "rows": [{"name": "resnet-mlp", "dataset": "mnist", "symmetry": "translation", "teacher": "resnet",
              "teacher_prime": "resnet-prime", "student": "mlp"}],
    "models": {"resnet": {"training": {"epochs": 3}}, "resnet-prime": {"training": {"epochs": 2}},
               "mlp": {"training": {"epochs": 3}, "distillation": {"epochs": 3}}},
}


class Report:
    def __init__(self):
        self.rows = []

    def add(self, check, item, value, limit="", ok=True):
        self.rows.append({"check": check, "item": item, "value": value, "limit": limit, "ok": bool(ok)})
        print(
            f"[{'ok' if ok else 'FAIL'}] {check}: {item} = {value} "
            f"{('(limit ' + str(limit) + ')') if limit != '' else ''}",
            flush=True,
        )

    @property
    def failed(self):
        return [r for r in self.rows if not r["ok"]]


def copy_workflow(dest: Path, extra: dict) -> Path:
    dest.mkdir(parents=True)
    for name in WORKFLOW:
        src = ROOT / name
        (shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
         if src.is_dir() else shutil.copy(src, dest / name))
    import yaml

    (dest / "extra.yaml").write_text(yaml.safe_dump(extra))
    return dest


def snakemake(workdir: Path, cores: int, timeout: int) -> tuple[int, float, str]:
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", "config.demo.yaml",
           "extra.yaml"]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        code, out = 124, f"timed out after {timeout} s\n{err.stdout or ''}{err.stderr or ''}"
    (workdir / "snakemake.log").write_text(out)
    return code, time.monotonic() - start, out


def job_devices(workdir: Path) -> dict[str, int]:
    """How many job logs say they ran on each device ("training on cuda:0 (...)")."""
    import re

    found = {}
    for log in (workdir / "logs").rglob("*.log"):
        for m in re.finditer(r"(?:training|distilling|evaluating \d+ runs) on (\S+)", log.read_text(errors="replace")):
            found[m.group(1)] = found.get(m.group(1), 0) + 1
    return found


def run_demo(report, name, workdir, device, cores, timeout):
    code, seconds, out = snakemake(workdir, cores, timeout)
    report.add(name, "snakemake exit status", code, 0, code == 0)
    report.add(name, "wall seconds", round(seconds, 1))
    if code != 0:
        print(out[-4000:])
        return None
    devices = job_devices(workdir)
    on_device = sum(n for d, n in devices.items() if d.startswith(device))
    report.add(name, "job logs on the device", json.dumps(devices), f"all on {device}",
               on_device > 0 and on_device == sum(devices.values()))
    import pandas as pd

    return pd.read_parquet(workdir / "results" / "metrics.parquet")


def fold_means(table):
    """Per group of folds (every identifier column but the fold): the mean and the standard
    deviation of each metric over the folds."""
    keys = [k for k in table.columns if k not in NOT_KEYS]
    t = table.copy()
    for k in keys:  # missing identifiers (a trained model's temperature) as text, so they group
        t[k] = [str(v) for v in t[k].astype(object)]
    g = t.groupby(keys)[METRICS]
    return g.mean(), g.std(ddof=1).fillna(0.0)


def compare(report, check, reference, other, enforce):
    ref_mean, ref_sd = fold_means(reference)
    oth_mean, _ = fold_means(other)
    ref_mean, oth_mean = ref_mean.align(oth_mean, join="inner")
    report.add(check, "groups of folds compared (model, recipe, T, symmetry, reference, ...)", len(ref_mean),
               f"= {len(fold_means(reference)[0])}", len(ref_mean) == len(fold_means(reference)[0]))
    diff = (oth_mean - ref_mean).abs()
    for metric in METRICS:
        report.add(check, f"max |difference| of fold-mean {metric}", f"{diff[metric].max():.4g}")
    limit = ref_sd["accuracy"].reindex(diff.index).mul(3).clip(lower=0.05)
    worst = (diff["accuracy"] - limit).idxmax()
    over = int((diff["accuracy"] > limit).sum())
    report.add(check, "accuracy groups outside max(0.05, 3 sd of folds)", over,
               f"0 (worst {worst}: {diff['accuracy'][worst]:.3f} vs {limit[worst]:.3f})", over == 0 or not enforce)


def child_training(args) -> None:
    """One training job on the demo's MNIST data (the resume and sharing checks), in this process:
    prints {"seconds", "peak_mb"} as JSON."""
    import torch

    sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
    from kdinv.jobs import train_model
    from kdinv.launch.start import start_job

    # on the CPU one thread each: two jobs with a thread per core each would oversubscribe it
    start_job(args.log, threads=1 if args.device == "cpu" else None)
    spec = json.loads(args.spec)
    start = time.monotonic()
    train_model(args.data / "data" / "train.pt", args.data / "folds" / "fold0.pt", spec, None, 7, args.device,
                args.out / "model.pt", args.out / "train_logits.pt", {"model": "acceptance", "fold": "0"},
                resume_every=1, resume_minutes=0.0)
    if args.device.startswith("cuda") and torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20  # the device's memory
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's, MB
    print(json.dumps({"seconds": time.monotonic() - start, "peak_mb": peak}), flush=True)


def start_training(data, out, device, spec, log):
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, __file__, "--child", "--device", device, "--data", str(data), "--out-model", str(out),
         "--spec", json.dumps(spec), "--log", str(log)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"},
    )


def check_resume(report, data, device, spec, scratch, timeout):
    import torch

    whole = start_training(data, scratch / "whole", device, spec, scratch / "whole.log")
    whole.communicate(timeout=timeout)
    victim = start_training(data, scratch / "killed", device, spec, scratch / "killed.log")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and victim.poll() is None:
        if (scratch / "killed.log").exists() and " epoch 2/" in (scratch / "killed.log").read_text():
            break
        time.sleep(0.05)
    killed_running = victim.poll() is None
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    report.add("resume", "killed while training, after epoch 2", killed_running, True, killed_running)
    again = start_training(data, scratch / "killed", device, spec, scratch / "killed.log")
    again.communicate(timeout=timeout)
    resumed = "resuming at epoch" in (scratch / "killed.log").read_text()
    report.add("resume", "the rerun resumed from the saved state", resumed, True, resumed)
    a = torch.load(scratch / "whole" / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(scratch / "killed" / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    report.add("resume", "checkpoint bit-identical to an uninterrupted run", same, True, same)


def check_sharing(report, data, device, spec, scratch, timeout):
    def one(tag):
        proc = start_training(data, scratch / tag, device, spec, scratch / f"{tag}.log")
        out, _ = proc.communicate(timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])

    start = time.monotonic()
    alone = one("alone")
    alone_wall = time.monotonic() - start
    start = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        pair = list(pool.map(one, ["shared-a", "shared-b"]))
    pair_wall = time.monotonic() - start
    report.add("sharing", "one training alone: seconds", round(alone["seconds"], 2))
    report.add("sharing", "one training alone: peak MB", round(alone["peak_mb"], 1))
    report.add("sharing", "two sharing the device: seconds each", [round(p["seconds"], 2) for p in pair])
    report.add("sharing", "two sharing the device: peak MB each", [round(p["peak_mb"], 1) for p in pair])
    report.add("sharing", "throughput of two together / one alone (jobs per second)",
               round((2 / pair_wall) / (1 / alone_wall), 2))


class Budget:
    """What is left of the run's time: a check's own limit, cut to the seconds that remain."""

    def __init__(self, seconds: float | None):
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self, cap: float) -> int:
        if self.end is None:
            return int(cap)
        return max(1, int(min(cap, self.end - time.monotonic())))


def run_stopped_by_sigterm(cmd, timeout, grace=20):
    """subprocess.run, but on timeout SIGTERM first (the process may write what it has), SIGKILL
    after ``grace`` seconds. Returns (exit code, 124 on timeout; stdout + stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return 124, f"{out}\nstopped after {timeout} s\n"


def epoch_tables(report, device, out, quick, timeouts, budget):
    """benchmarks/run.py at paper scale (what the former gpu.sh ran): the step table, epoch times
    per model and the GPU-hours of the grid, in float32 and bf16; each pass under its time limit
    (on SIGTERM run.py prints and writes what it measured so far)."""
    rows = (
        ["--rows", "dsinv-mlp", "--scale", "small", "--steps", "2"] if quick else ["--scale", "paper", "--steps", "10"]
    )
    for tag, extra in (
        ("float32", ["--epochs-table"]),
        ("bf16", ["--bf16", "--min-chunk-ms", "20", "--eval-batches", "1"]),
    ):
        timeout = budget.left(timeouts[tag])
        csv = out / f"epochs-{device.split(':')[0]}-{tag}.csv"
        cmd = [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--device",
            device,
            *rows,
            *extra,
            "--csv",
            str(csv),
        ]
        code, text = run_stopped_by_sigterm(cmd, timeout)
        (out / f"epochs-{device.split(':')[0]}-{tag}.txt").write_text(text)
        report.add("epochs", f"benchmarks/run.py --epochs-table ({tag})", code, 0, code == 0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--cores", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--quick", action="store_true", help="fewer folds and temperatures (the CPU path of CI)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--demo-timeout", type=int, default=300, help="seconds for the three demo runs (together)")
    ap.add_argument("--budget", type=float, help="seconds for the whole run (default: 480 on a GPU, none on the CPU)")
    ap.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary folder)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out-model", dest="out_model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.out = args.out_model
        return child_training(args)

    import torch
    import yaml

    device = args.device
    report = Report()
    report.add("machine", "torch", torch.__version__)
    report.add(
        "machine",
        "device",
        torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "cpu",
    )
    if device.startswith("cuda") and not torch.cuda.is_available():
        report.add("machine", "CUDA available", False, True, False)
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="kdinv-acceptance-"))
    args.out.mkdir(parents=True, exist_ok=True)
    base = QUICK if args.quick else {}
    started = time.monotonic()
    budget_s = args.budget if args.budget is not None else (None if device == "cpu" else 480.0)
    budget = Budget(budget_s)
    try:
        if not report.failed:
            # (a)-(c) at once: the device in float32 and in bf16, and the CPU (the GPU runs share
            # the GPU; their times are not among the measurements)
            runs = {
                "demo": (copy_workflow(scratch / "device", {**base, "device": device, "precision": "float32"}), device),
                "demo_cpu": (copy_workflow(scratch / "cpu", {**base, "device": "cpu", "precision": "float32"}), "cpu"),
                "bf16": (copy_workflow(scratch / "bf16", {**base, "device": device, "precision": "bf16"}), device),
            }
            cores = max(1, args.cores // 3)
            with ThreadPoolExecutor(3) as pool:
                futures = {k: pool.submit(run_demo, report, k, d, dev, cores, budget.left(args.demo_timeout))
                           for k, (d, dev) in runs.items()}
                tables = {k: f.result() for k, f in futures.items()}
            if tables["demo"] is not None and tables["demo_cpu"] is not None:
                compare(report, "cpu_vs_device", tables["demo_cpu"], tables["demo"], enforce=True)
            if tables["demo"] is not None and tables["bf16"] is not None:
                compare(report, "bf16_vs_float32", tables["demo"], tables["bf16"], enforce=False)
            demo_cfg = yaml.safe_load((ROOT / "config.demo.yaml").read_text())
            resnet = demo_cfg["models"]["resnet"]  # the demo's MNIST teacher, 4 epochs
            spec = {"arch": "resnet18_aps", "params": resnet["params"],
                    "training": {**resnet["training"], "epochs": 4, "patience": None, "lr_patience": None}}
            data = scratch / "device" / "results" / "mnist"
            if (data / "data" / "train.pt").exists():
                check_resume(report, data, device, spec, scratch / "resume", budget.left(120))
                check_sharing(report, data, device, spec, scratch / "sharing", budget.left(120))
            else:
                report.add("resume", "the demo's MNIST data", "missing", "present", False)
            epoch_tables(report, device, args.out, args.quick, {"float32": 100, "bf16": 60}, budget)
    finally:
        wall = time.monotonic() - started
        report.add("total", "wall seconds", round(wall, 1), "" if budget_s is None else budget_s,
                   budget_s is None or wall <= budget_s)
        write(report, args.out, device)
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 1 if report.failed else 0


def write(report, out: Path, device: str):
    import pandas as pd

    tag = device.split(":")[0]
    pd.DataFrame(report.rows).astype({"value": str, "limit": str}).to_csv(out / f"acceptance-{tag}.csv", index=False)
    lines = [f"# GPU acceptance on {tag}", "", (f"{len(report.rows) - len(report.failed)} of {len(report.rows)} "
             f"lines ok; failed: {', '.join(r['check'] + ': ' + r['item'] for r in report.failed) or 'none'}"), "",
             "| check | item | value | limit | ok |", "|---|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['item']} | {r['value']} | {r['limit']} | {'yes' if r['ok'] else '**no**'} |"
              for r in report.rows]
    (out / f"acceptance-{tag}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
