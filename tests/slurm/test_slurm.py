"""The workflow on a real SLURM cluster: a single-node cluster on 127.0.0.1 started by
``start-local-slurm.sh`` beside this file (Debian's slurmctld, slurmd, munge, and slurmdbd with a
local MariaDB, so that sacct answers as on real clusters; four fake GPUs; preemption by partition
priority), and the real snakemake-executor-plugin-slurm through ``profiles/slurm``, with the
plugin's default status command, sacct.

One run of a slice of the demo (the jets row, two folds, one temperature: 35 SLURM jobs) meets
the failures users meet, while the same slice runs locally beside it for the comparison:

- scancel: one training is cancelled part-way; sacct reads ``CANCELLED by 0``. The job must be
  reported failed and resubmitted (not waited on forever), and the retry resumes.
- time limit: while a second training runs, the test shortens its time limit (scontrol update
  TimeLimit, as if it had asked for too little time). The workflow's ``--signal`` makes SLURM send
  SIGTERM well before the limit (SLURM checks about every 30 s); the job saves its resume state
  and exits (sacct: FAILED before the limit, not TIMEOUT), and the retry asks for twice the time
  and 1.5 times the memory, and resumes.
- preemption: a job of a higher-priority partition takes the whole node while a training is
  part-way. Trainings run in a partition that requeues preempted jobs (the job runs again under
  its job id and resumes); distillations run in one that cancels them, where the state stays
  PREEMPTED: such a job must be reported failed and resubmitted.

The run must complete, and its metrics must equal those of the local run (1e-5). Every Snakemake
call runs under ``timeout -s INT``, so a hang fails the test instead of stalling it.
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
from test_workflow import ROOT, copy_workflow

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

CLUSTER = {
    "LOCAL_SLURM_ACCOUNTING": "slurmdbd",
    "LOCAL_SLURM_GPUS": "4",
    "LOCAL_SLURM_CPUS": "4",
    "LOCAL_SLURM_PREEMPT": "partition_prio",
    # debug (default): preempted jobs are requeued; cancelled: preempted jobs are cancelled;
    # urgent: preempts both
    # short: MaxTime 1 minute (EnforcePartLimits=NO: a job asking for more stays PENDING)
    "LOCAL_SLURM_PARTITIONS": "debug:1 cancelled:1:CANCEL urgent:10:OFF short:1::1",
    # memory limits enforced (task/cgroup) where this machine has a writable cgroup v1 memory
    # hierarchy; else none, and the out-of-memory test is skipped
    "LOCAL_SLURM_CGROUP": "v1" if os.access("/sys/fs/cgroup/memory", os.W_OK) else "none",
}
TARGET = "results/metrics.parquet"
RUN_TIMEOUT = 600  # seconds; a hang fails the test after this long

SLICE = {
    "folds": 2,
    "temperatures": [4],
    # the fake GPUs have no CUDA: the jobs train on the CPU, and the test asks for a GPU for
    # them with --set-resources (a GPU job with device auto fails at once: the last test)
    "device": "cpu",
    "threads": 1,
    # 10 minutes, of which no job needs 2: SIGTERM 150 s before the limit (signal_seconds = 180,
    # at most a quarter of the limit); retries ask for 20 minutes and 3000 MB. 2000 MB: a job's
    # two Snakemake processes and its training (about 1050 MB together on this cluster, by sacct's
    # MaxRSS), since the cluster enforces memory limits where it can (LOCAL_SLURM_CGROUP)
    "job_resources": {"mem_mb": 2000, "runtime": 10},
    "evaluation": {"batch_size": 1024},
    "datasets": {
        "jets": {"source": "offline", "offline_files": {"train": 2, "val": 1}, "offline_jets_per_file": 1000},
    },
    "models": {
        # long enough (45 s on an idle 2-core machine, 0.1 s an epoch; minutes under load) to be
        # cancelled part-way, to run on for the 30 s SLURM may take to send SIGTERM after the test
        # shortened its time limit, and to be preempted part-way after that (when resumed); at 150
        # epochs an idle machine finished it in 16 s, before the SIGTERM came
        "jet-deepsets": {
            "params": {"phi": [32, 32, 32], "rho": [32]},
            "training": {
                "epochs": 450, "batch_size": 16, "lr": 2.9e-3, "patience": None, "eval_batch_size": 4096,
            },
        },
        "jet-deepsets-prime": {"training": {"epochs": 4, "batch_size": 128, "lr": 2.9e-3, "patience": None}},
        "jet-mlp": {
            "params": {"hidden": [32, 32]},
            "training": {"epochs": 3, "batch_size": 128, "lr": 1.5e-3, "patience": None},
            "distillation": {"epochs": 12, "batch_size": 32, "lr": 1.5e-3, "patience": None},
        },
    },
}
CANCELLED = "logs/train_model/jets/jet-deepsets/plain/fold0.log"
TIMED_OUT = "logs/train_model/jets/jet-deepsets/plain/fold1.log"


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
    env = {**os.environ, **CLUSTER}
    proc = subprocess.run(
        ["timeout", "300", "bash", str(script), "start"], env=env, capture_output=True, text=True,
        check=False,
    )
    assert proc.returncode == 0, (
        f"the local SLURM cluster did not start:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    yield
    subprocess.run(["timeout", "60", "bash", str(script), "stop"], env=env, capture_output=True, text=True, check=False)


def _slice_workdir(dest: Path) -> Path:
    dest.mkdir(parents=True)
    copy_workflow(dest)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    (dest / "slice.yaml").write_text(
        yaml.safe_dump({**SLICE, "rows": [row for row in config["rows"] if row["name"] == "dsinv-mlp"]})
    )
    return dest


def _sacct(*args: str) -> list[list[str]]:
    out = subprocess.run(
        ["sacct", "--noheader", "--parsable2", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def _running(partition: str | None = None) -> list[str]:
    """Ids of the running jobs (of one partition)."""
    args = ["squeue", "--noheader", "--states=RUNNING", "--format=%i"]
    if partition:
        args += ["--partition", partition]
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False).stdout.split()


def _log_state(path: Path) -> tuple[str | None, int, int, str]:
    """(SLURM job id, last epoch logged, epochs to train, text) of a training's log; a resumed
    job's log starts at the epoch it resumed at."""
    text = path.read_text() if path.exists() else ""
    job = re.search(r"SLURM job (\d+)", text)
    epochs = [(int(e), int(n)) for e, n in re.findall(r" epoch (\d+)/(\d+)", text)]
    epoch, total = max(epochs, default=(0, 0))
    return (job.group(1) if job else None), epoch, total, text


def _resumed_at(text: str) -> int | None:
    found = re.search(r"resuming at epoch (\d+)", text)
    return int(found.group(1)) if found else None


def _training_runs(events: Events, log: str, job: str) -> list[str]:
    """The texts of the runs of one SLURM job that reached training (logged an epoch). A run
    that ended while starting up (a requeued job can be preempted again before it reads its
    resume state) shows neither a fresh start nor a resumption."""
    return [
        text for key, text in events.logs.items()
        if key.startswith(f"{log} (job {job},") and re.search(r" epoch \d+/\d+", text)
    ]


def _seconds(text: str) -> float:
    """[days-][hours:]minutes:seconds[.fraction] in seconds."""
    days, _, clock = text.rpartition("-")
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds + 86400 * int(days or 0)


def _elapsed(job: str) -> int:
    """Seconds a running job has run."""
    text = subprocess.run(
        ["squeue", "--noheader", "--jobs", job, "--format=%M"], capture_output=True, text=True, timeout=30,
        check=False,
    ).stdout.strip()
    return int(_seconds(text))


def _preempt() -> None:
    """A job of the urgent partition that needs the whole node: SLURM preempts every job."""
    subprocess.run(
        ["sbatch", "--parsable", "--job-name", "urgent", "--partition", "urgent", "--exclusive",
         "--time", "1", "--mem", "100", "--output", "/dev/null", "--wrap", "sleep 1"],
        check=True, capture_output=True, text=True, timeout=30,
    )


class Events:
    """What the test does to the run's jobs, as the run reaches them. The scancel and the time
    limit are recorded as (SLURM job id, the training's log, the last epoch it had logged).
    Preemptions are repeated (at most 4, 10 s apart) until one has requeued a training that was
    part-way and one has cancelled a distillation, as sacct shows."""

    def __init__(self, workdir: Path, output: Path):
        self.workdir, self.output = workdir, output
        self.cancelled: tuple[str, str, int] | None = None
        self.time_limited: tuple[str, str, int] | None = None
        self.preempted: tuple[str, str, int] | None = None  # a training, requeued by SLURM
        self.preempted_cancelled: list[str] = []  # distillations, whose partition cancels them
        self.candidates: list[tuple[str, str, int]] = []  # trainings part-way when preempted
        self.preemptions: list[float] = []
        self.waiting_since: float | None = None
        self.logs: dict[str, str] = {}  # every training log as last seen per run, for failures

    def trainings(self) -> dict[str, tuple[str | None, int, int, str]]:
        logs = sorted((self.workdir / "logs/train_model").rglob("*.log"))
        states = {str(log.relative_to(self.workdir)): _log_state(log) for log in logs}
        for log, (job, _, _, text) in states.items():
            if job:  # Snakemake starts a job's log afresh when the job runs again
                self.logs[f"{log} (job {job}, {text[:23]})"] = text
        return states

    def step(self) -> None:
        trainings = self.trainings()
        if self.cancelled is None:
            job, epoch, _, _ = trainings.get(CANCELLED, (None, 0, 0, ""))
            if job and epoch >= 3:
                subprocess.run(["scancel", job], check=True, timeout=30)
                self.cancelled = (job, CANCELLED, epoch)
        if self.time_limited is None:
            job, epoch, _, _ = trainings.get(TIMED_OUT, (None, 0, 0, ""))
            if job and epoch >= 2 and job in _running():
                # a limit at least a minute away, so that only the early SIGTERM can end the job
                minutes = _elapsed(job) // 60 + 2
                subprocess.run(
                    ["scontrol", "update", f"JobId={job}", f"TimeLimit={minutes}"], check=True, timeout=30
                )
                self.time_limited = (job, TIMED_OUT, epoch)
        if self.cancelled is None or self.time_limited is None:
            return
        if self.preempted is not None and self.preempted_cancelled:
            return
        if self.preemptions:
            self.read_preemptions()
        if (self.preempted is not None and self.preempted_cancelled) or len(self.preemptions) >= 4:
            return
        if self.preemptions and time.monotonic() - self.preemptions[-1] < 10:
            return
        running = _running()
        done = {self.cancelled[0], self.time_limited[0]}
        # a training part-way, at least 10 epochs from its end (still training when SIGTERM
        # comes; often the resumed retry of one of the above)
        part_way = sorted(
            ((total - epoch, (job, log, epoch)) for log, (job, epoch, total, _) in trainings.items()
             if job in running and job not in done and epoch >= 2 and total - epoch >= 10),
            reverse=True,
        )
        # a distillation: any that runs (starting up or training) is preempted, and stays PREEMPTED
        distilling = _running("cancelled")
        if self.preempted is None:
            if not part_way:
                return
            # wait (up to 15 s) for a distillation to run too, so that one preemption covers both
            self.waiting_since = self.waiting_since or time.monotonic()
            if not distilling and not self.preempted_cancelled and time.monotonic() - self.waiting_since < 15:
                return
        elif not distilling:
            return
        _preempt()
        self.preemptions.append(time.monotonic())
        self.candidates += [candidate for _, candidate in part_way]

    def read_preemptions(self) -> None:
        """Which jobs the preemptions preempted (sacct's records of the run's jobs)."""
        run_id = re.search(r"SLURM run ID: (\S+)", self.output.read_text())
        records = _sacct("-X", "--duplicates", "--name", run_id.group(1), "--format=JobIdRaw,Partition,State")
        preempted = {(job, partition) for job, partition, state in records if state == "PREEMPTED"}
        self.preempted_cancelled = sorted(job for job, partition in preempted if partition == "cancelled")
        requeued = [c for c in self.candidates if (c[0], "debug") in preempted]
        if requeued and self.preempted is None:
            self.preempted = requeued[0]


    def runs_of(self, log: str) -> str:
        runs = [f"== {key}\n{text[-1500:]}" for key, text in self.logs.items() if key.startswith(log)]
        return "\n".join(runs)


def _slurm_jobs(workdir: Path, rule: str, wildcards: str) -> list[str]:
    """The SLURM job ids of one Snakemake job, oldest first, from the plugin's log files
    (.snakemake/slurm_logs/rule_<rule>/<wildcard values>/<job id>.log)."""
    logs = (workdir / ".snakemake/slurm_logs" / f"rule_{rule}" / wildcards).glob("*.log")
    return sorted((p.stem for p in logs), key=int)


GPU_TARGET = "results/jets/train/jet-mlp/plain/fold0/model.pt"
GPU_LOG = "logs/train_model/jets/jet-mlp/plain/fold0.log"


def _start_gpu_check(workdir: Path, out: Path) -> subprocess.Popen:
    """With device auto a training asks for a GPU and gets a fake one, which torch cannot see.
    Run in the directory of whichever of the two runs ends first (it has the data), beside the
    other, so that it adds little time; --retries 0: each retry would fail as fast."""
    return subprocess.Popen(
        ["timeout", "-s", "INT", "-k", "30", "240", *SNAKEMAKE, GPU_TARGET,
         "--workflow-profile", "profiles/slurm", "--configfile", "slice.yaml", "--config", "device=auto",
         "--forcerun", GPU_TARGET, "--retries", "0", "--set-resources", "train_model:slurm_partition=debug",
         "--slurm-init-seconds-before-status-checks", "4", "--seconds-between-status-checks", "2"],
        cwd=workdir, stdout=open(out, "w"), stderr=subprocess.STDOUT,
    )


STUCK_TARGET = "results/jets/folds/fold0.pt"
# how each stuck run's make_folds job is kept from starting
STUCK = {
    # submitted held (sbatch --hold): PENDING (JobHeldUser) until released, which no one does
    "held": ["make_folds:slurm_extra='--hold'"],
    # 10 minutes in a partition whose MaxTime is 1: PENDING (PartitionTimeLimit) forever
    "time_limit": ["make_folds:slurm_partition='short'", "make_folds:runtime=10"],
}


def _start_stuck(done: Path, base: Path, kind: str) -> tuple[subprocess.Popen, Path]:
    """A run of one make_folds job that SLURM will not start, in a copy of a finished run's
    directory (its data and folds; not its .snakemake). The job must be reported failed, at once
    for the partition's time limit, after job_resources.stuck_minutes (15 s here) for the hold."""
    workdir = base / f"stuck-{kind}"
    shutil.copytree(done, workdir, ignore=shutil.ignore_patterns(".snakemake"))
    (workdir / "stuck.yaml").write_text(yaml.safe_dump({"job_resources": {"stuck_minutes": 0.25}}))
    out = base / f"stuck-{kind}.out"
    proc = subprocess.Popen(
        ["timeout", "-s", "INT", "-k", "30", "240", *SNAKEMAKE, STUCK_TARGET,
         "--workflow-profile", "profiles/slurm", "--configfile", "slice.yaml", "stuck.yaml",
         "--forcerun", STUCK_TARGET, "--retries", "0", "--set-resources", *STUCK[kind],
         "--slurm-init-seconds-before-status-checks", "4", "--seconds-between-status-checks", "2"],
        cwd=workdir, stdout=open(out, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115 - open while the run lasts
    )
    return proc, out


OOM_TARGET = "results/jets/train/jet-mlp/plain/fold1/model.pt"


def _start_oom(done: Path, base: Path) -> tuple[subprocess.Popen, Path]:
    """The large jet MLP of BIG (its parameters, gradients, Adam state and best weights alone
    take about 320 MB) asking for 720 MB (just over the 703 MB the config check wants for the
    MNIST split the config keeps), less than its job uses: SLURM's cgroup kills it for memory,
    and the retry asks for 4 times as much (mem_growth 4) and completes. (The slice's own jet MLP
    fitted in 720 MB.)"""
    workdir = base / "oom"
    shutil.copytree(done, workdir, ignore=shutil.ignore_patterns(".snakemake"))
    (workdir / "oom.yaml").write_text(yaml.safe_dump({**BIG, "job_resources": {"mem_mb": 720, "mem_growth": 4}}))
    out = base / "oom.out"
    proc = subprocess.Popen(
        ["timeout", "-s", "INT", "-k", "30", "300", *SNAKEMAKE, OOM_TARGET,
         "--workflow-profile", "profiles/slurm", "--configfile", "slice.yaml", "oom.yaml",
         "--forcerun", OOM_TARGET, "--retries", "1",
         "--slurm-init-seconds-before-status-checks", "4", "--seconds-between-status-checks", "2"],
        cwd=workdir, stdout=open(out, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115 - open while the run lasts
    )
    return proc, out


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The slice through SLURM while the test cancels, preempts and lets jobs meet their time
    limit, and the same slice run locally at the same time."""
    base = tmp_path_factory.mktemp("slice")
    slurm_dir = _slice_workdir(base / "slurm")
    local_dir = _slice_workdir(base / "local")
    started = time.monotonic()
    local_out = open(base / "local.out", "w")  # noqa: SIM115 - open while the local run lasts
    # niced: it only has to finish by the end, while the SLURM run's jobs wait on each other
    local = subprocess.Popen(
        ["timeout", "-s", "INT", "-k", "30", str(RUN_TIMEOUT), "nice", "-n", "10", *SNAKEMAKE, TARGET,
         "--cores", "2", "--configfile", "slice.yaml"],
        cwd=local_dir, stdout=local_out, stderr=subprocess.STDOUT,
    )
    cmd = SNAKEMAKE + [
        # more jobs than the node's 4 CPUs: SLURM starts the next one as soon as one ends
        TARGET, "--workflow-profile", "profiles/slurm", "--configfile", "slice.yaml", "--jobs", "8",
        # the GPU rules get a (fake) GPU; distillations go to the partition that cancels
        # preempted jobs
        "--set-resources", "train_model:gpu=1", "distill_student:gpu=1", "evaluate_trained:gpu=1",
        "evaluate_distilled:gpu=1",
        "distill_student:slurm_partition=cancelled",
        # a GPU job must name its partition (rules/cluster.smk refuses the run otherwise)
        "train_model:slurm_partition=debug", "evaluate_trained:slurm_partition=debug",
        "evaluate_distilled:slurm_partition=debug",
        # poll often (a test): after a job ends, the plugin's next check is this many seconds later
        "--slurm-init-seconds-before-status-checks", "4", "--seconds-between-status-checks", "2",
    ]
    out_path = base / "slurm.out"
    events = Events(slurm_dir, out_path)
    with open(out_path, "w") as out:
        proc = subprocess.Popen(
            ["timeout", "-s", "INT", "-k", "30", str(RUN_TIMEOUT), *cmd], cwd=slurm_dir,
            stdout=out, stderr=subprocess.STDOUT,
        )
        gpu_check = None
        try:
            while proc.poll() is None:
                events.step()
                if gpu_check is None and local.poll() is not None:
                    local_seconds = time.monotonic() - started
                    gpu_dir = local_dir
                    gpu_check = _start_gpu_check(gpu_dir, base / "gpu_check.out")
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
    events.trainings()  # the logs as the run left them
    if events.preemptions:
        events.read_preemptions()
    slurm_seconds = time.monotonic() - started
    output = out_path.read_text()
    assert proc.returncode == 0, f"rc {proc.returncode} after {slurm_seconds:.0f} s:\n{output[-8000:]}"
    stuck = {kind: _start_stuck(slurm_dir, base, kind) for kind in STUCK}
    oom = _start_oom(slurm_dir, base) if CLUSTER["LOCAL_SLURM_CGROUP"] == "v1" else None
    if gpu_check is None:  # the SLURM run ended first: the check runs beside the local run
        gpu_dir = slurm_dir
        gpu_check = _start_gpu_check(gpu_dir, base / "gpu_check.out")
        local.wait(timeout=RUN_TIMEOUT + 60)
        local_seconds = time.monotonic() - started
        gpu_check.wait(timeout=300)  # before the tests read this directory's logs
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    jobs = _sacct("-X", "--name", run_id, "--format=JobIdRaw,State")
    cpu = sum(_seconds(t) for job, t in _sacct("--duplicates", "--name", run_id, "--format=JobID,TotalCPU")
              if "." not in job)
    print(
        f"\nSLURM run: {slurm_seconds:.0f} s (the local run: {local_seconds:.0f} s), {len(jobs)} SLURM "
        f"jobs ({', '.join(sorted({state for _, state in jobs}))}); cancelled {events.cancelled}, "
        f"time-limited {events.time_limited}, preempted {events.preempted} and "
        f"{events.preempted_cancelled}; CPU time of the SLURM jobs {cpu:.0f} s; "
        f"load average {os.getloadavg()[1]:.1f}"
    )
    yield {"dir": slurm_dir, "out": output, "events": events, "local": local, "local_dir": local_dir,
           "local_out": base / "local.out", "gpu_check": gpu_check, "gpu_check_out": base / "gpu_check.out",
           "gpu_dir": gpu_dir, "stuck": stuck, "oom": oom}
    for leftover in (local, gpu_check, *(proc for proc, _ in [*stuck.values(), *([oom] if oom else [])])):
        if leftover.poll() is None:
            leftover.kill()


def test_a_cancelled_job_is_reported_failed_resubmitted_and_resumes(slurm_run):
    workdir, out, events = slurm_run["dir"], slurm_run["out"], slurm_run["events"]
    assert events.cancelled is not None, f"{CANCELLED} never showed a running epoch"
    job, log, epoch = events.cancelled
    # what sacct, the plugin's status command, says about it
    assert _sacct("-X", "-j", job, "--format=State") == [["CANCELLED by 0"]]
    assert re.search(rf"SLURM-job '{job}' failed, SLURM status is: 'CANCELLED'", out), out[-6000:]
    # the workflow's status fix was in force (rules/cluster.smk checks it before any submission)
    assert "the workflow's fix of job states is in force" in out
    # the resubmitted job (a new SLURM job) continued from where the cancelled one stopped
    retry = _slurm_jobs(workdir, "train_model", "jets_jet-deepsets_plain_0")
    assert retry[0] == job and len(retry) >= 2, retry
    # every run of it that trained resumed there, none started afresh
    resumed = [_resumed_at(text) for text in _training_runs(events, log, retry[1])]
    assert resumed and all(r is not None and r >= epoch for r in resumed), events.runs_of(log)


def test_a_job_near_its_time_limit_gets_sigterm_before_it_saves_and_its_retry_resumes(slurm_run):
    workdir, events = slurm_run["dir"], slurm_run["events"]
    assert events.time_limited is not None, f"{TIMED_OUT} never showed a running epoch"
    job, log, epoch = events.time_limited
    jobs = _slurm_jobs(workdir, "train_model", "jets_jet-deepsets_plain_1")
    assert jobs[0] == job and len(jobs) >= 2, jobs
    [[state, elapsed, limit, mem]] = _sacct("-X", "-j", job, "--format=State,ElapsedRaw,TimelimitRaw,ReqMem")
    # SIGTERM (--signal=TERM@150) ended it before its limit: FAILED, not TIMEOUT
    assert state == "FAILED" and int(elapsed) < int(limit) * 60, (state, elapsed, limit)
    assert mem == "2000M"
    # the retry asked for twice the time and 1.5 times the memory, and resumed
    [[limit, mem]] = _sacct("-X", "-j", jobs[1], "--format=TimelimitRaw,ReqMem")
    assert (limit, mem) == ("20", "3000M")
    resumed = [_resumed_at(text) for text in _training_runs(events, log, jobs[1])]
    assert resumed and all(r is not None and r >= epoch for r in resumed), events.runs_of(log)


def test_a_preempted_job_is_requeued_or_resubmitted_and_the_run_completes(slurm_run):
    out, events = slurm_run["out"], slurm_run["events"]
    assert events.preempted is not None, "no training ran part-way after the other events"
    job, log, epoch = events.preempted
    # requeued by SLURM: one record of the preempted run, then one of the run after it
    records = _sacct("-X", "--duplicates", "-j", job, "--format=State,Start")
    assert records[0][0] == "PREEMPTED" and len(records) >= 2 and records[-1][1] != "Unknown", records
    # the run after the preemption (the same SLURM job id) continued from where it stopped
    resumed = [_resumed_at(text) for text in _training_runs(events, log, job)]
    assert any(r is not None and r >= epoch for r in resumed), events.runs_of(log)
    # preempted in the distillations' partition, which cancels: reported failed, resubmitted
    assert events.preempted_cancelled, "no distillation ran while the test preempted"
    for victim in events.preempted_cancelled:
        assert _sacct("-X", "-j", victim, "--format=State") == [["PREEMPTED"]]
        assert re.search(rf"SLURM-job '{victim}' failed", out), out[-6000:]
    assert "were preempted and not requeued" in out


def test_every_job_ran_on_slurm_and_gpu_rules_got_a_gpu(slurm_run):
    workdir = slurm_run["dir"]
    log_dir = workdir / ".snakemake/slurm_logs"  # rule_<rule>/<wildcards>/<job id>.log
    rules = {p.relative_to(log_dir).parts[0] for p in log_dir.rglob("*.log")}
    # a group job's folder is group_<group>_<its rules>: here group_evaluation_evaluate_distilled_evaluate_trained
    groups = {name for name in rules if name.startswith("group_evaluation")}
    assert len(groups) == 1, rules
    assert {"rule_train_model", "rule_distill_student",
            "rule_prepare_jets", "rule_make_folds", "rule_collect_metrics"} <= rules
    assert "rule_fetch_jets" not in rules  # a localrule: runs on the submitting host
    # the evaluations are bundled: one SLURM job per fold holds the fold's trained and distilled
    # evaluations (profiles/slurm groups), and asks for one GPU
    assert not {"rule_evaluate_trained", "rule_evaluate_distilled"} & rules
    bundles = sorted({p.stem for p in (log_dir / groups.pop()).rglob("*.log")}, key=int)
    assert len(bundles) == SLICE["folds"], bundles
    for bundle in bundles:
        [[tres]] = _sacct("-X", "-j", bundle, "--format=AllocTRES%200")
        assert "gres/gpu=1" in tres, tres
    for train_log in (workdir / "logs/train_model").rglob("*.log"):
        assert re.search(r"SLURM job \d+ on \S+, CUDA_VISIBLE_DEVICES=\d", train_log.read_text()), train_log
    prepare = (workdir / "logs/prepare_jets/jets.log").read_text()
    assert re.search(r"SLURM job \d+ on \S+, CUDA_VISIBLE_DEVICES=$", prepare, re.MULTILINE), prepare


def test_the_metrics_equal_those_of_the_same_slice_run_locally(slurm_run):
    local = slurm_run["local"]
    local.wait(timeout=RUN_TIMEOUT + 60)
    assert local.returncode == 0, slurm_run["local_out"].read_text()[-6000:]
    keys = ["kind", "dataset", "model", "augment", "teacher", "teacher_augment", "temperature", "fold",
            "symmetry", "reference"]
    on_slurm = pd.read_parquet(slurm_run["dir"] / TARGET).sort_values(keys).reset_index(drop=True)
    at_home = pd.read_parquet(slurm_run["local_dir"] / TARGET).sort_values(keys).reset_index(drop=True)
    assert len(on_slurm) == len(at_home) == 4 * 2 + 4 * 2 + 2
    pd.testing.assert_frame_equal(on_slurm, at_home, check_exact=False, atol=1e-5, rtol=0)


def test_a_gpu_job_that_cannot_see_its_gpu_fails_at_once(slurm_run):
    """The training stops at once with a message naming it and CUDA_VISIBLE_DEVICES."""
    proc = slurm_run["gpu_check"]
    proc.wait(timeout=300)
    out = slurm_run["gpu_check_out"].read_text()
    assert proc.returncode == 1, out[-6000:]
    log = (slurm_run["gpu_dir"] / GPU_LOG).read_text()
    job = re.search(r"SLURM job (\d+) on \S+, CUDA_VISIBLE_DEVICES=(\d)", log)
    assert job, log
    assert (
        f"train_model dataset=jets model=jet-mlp augment=plain fold=0: SLURM job {job.group(1)} on "
        f"localnode was given a GPU (CUDA_VISIBLE_DEVICES='{job.group(2)}') but torch"
    ) in log, log
    assert "epoch 1/" not in log
    [[state, elapsed]] = _sacct("-X", "-j", job.group(1), "--format=State,ElapsedRaw")
    assert state == "FAILED" and int(elapsed) < 60, (state, elapsed)


@pytest.mark.parametrize("kind, reason", [
    ("held", r"PENDING \(JobHeldUser\) for [0-9.]+ min \(grace: job_resources.stuck_minutes\)"),
    ("time_limit", r"PENDING \(PartitionTimeLimit\): the cluster will never start it as requested"),
])
def test_a_job_slurm_will_not_start_is_reported_failed_naming_job_rule_and_reason(slurm_run, kind, reason):
    """The plugin counts PENDING as waiting, whatever the reason: without the fix such a run
    waits until its timeout ends it."""
    proc, out_path = slurm_run["stuck"][kind]
    proc.wait(timeout=300)
    out = out_path.read_text()
    assert proc.returncode == 1, f"rc {proc.returncode}:\n{out[-6000:]}"  # 124: it waited for the timeout
    found = re.search(rf"SLURM job (\d+) \(rule make_folds, dataset=jets\): {reason}", out)
    assert found, out[-6000:]
    # cancelled, so that it cannot start later beside a retry
    assert _sacct("-X", "-j", found.group(1), "--format=State") == [["CANCELLED by 0"]]


BIG_TARGET = "results/jets/train/jet-mlp/plain/fold0/model.pt"
BIG_LOG = "logs/train_model/jets/jet-mlp/plain/fold0.log"
# a jet MLP of two 4000-wide layers: 16 M parameters, so its resume state (weights, Adam's two
# moments, the best weights) is about 260 MB, more than the paper's largest (235 MB)
BIG = {"models": {"jet-mlp": {"params": {"hidden": [4000, 4000]},
                              "training": {"epochs": 4, "batch_size": 128, "lr": 1.5e-3, "patience": None}}}}


@pytest.fixture(scope="module")
def big_state_run(slurm_run, tmp_path_factory):
    """One training with a large resume state, in a copy of the finished run's directory. When it
    has logged its first epoch, the test sends SIGTERM to its job step as SLURM's --signal does
    before a time limit (scancel --signal=TERM: the step's processes, not the batch shell)."""
    base = tmp_path_factory.mktemp("big")
    workdir = base / "run"
    shutil.copytree(slurm_run["dir"], workdir, ignore=shutil.ignore_patterns(".snakemake"))
    (workdir / "big.yaml").write_text(yaml.safe_dump(BIG))
    out_path = base / "big.out"
    proc = subprocess.Popen(
        ["timeout", "-s", "INT", "-k", "30", "420", *SNAKEMAKE, BIG_TARGET,
         "--workflow-profile", "profiles/slurm", "--configfile", "slice.yaml", "big.yaml",
         "--forcerun", BIG_TARGET, "--retries", "1",
         "--set-resources", "train_model:slurm_partition='debug'", "train_model:mem_mb=3000",
         "--slurm-init-seconds-before-status-checks", "4", "--seconds-between-status-checks", "2"],
        cwd=workdir, stdout=open(out_path, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115 - open while the run lasts
    )
    log, state = workdir / BIG_LOG, workdir / Path(BIG_TARGET).with_name("resume.pt")
    signalled, logs, biggest = None, {}, 0
    try:
        while proc.poll() is None:
            job, epoch, _, text = _log_state(log)
            if job:
                logs[job] = text
            if signalled is None and job and epoch >= 1 and job in _running():
                subprocess.run(["scancel", "--signal=TERM", job], check=True, timeout=30)
                signalled = (job, epoch)
            if state.exists():
                biggest = max(biggest, state.stat().st_size)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    job, _, _, text = _log_state(log)
    if job:
        logs[job] = text
    return {"proc": proc, "out": out_path.read_text(), "signalled": signalled, "logs": logs,
            "biggest": biggest}


def test_sigterm_during_a_large_resume_state_save_leaves_a_complete_state_that_the_retry_resumes(big_state_run):
    """The early SIGTERM reaches every process of the job step: the inner Snakemake, the shell
    it starts the script in, and the training. The training saves its state (here ~260 MB) and
    exits; if Snakemake or the shell died of the signal first, the step would end and slurmstepd
    would kill the training half-way through the write (rules/cluster.smk)."""
    run = big_state_run
    assert run["signalled"], run["out"][-6000:]
    job, epoch = run["signalled"]
    assert run["proc"].returncode == 0, run["out"][-6000:]
    first = run["logs"][job]
    assert re.search(r"SIGTERM (at|after) epoch \d+; resume state saved", first), first[-3000:]
    assert run["biggest"] >= 200e6, run["biggest"]
    [[state]] = _sacct("-X", "-j", job, "--format=State")
    assert state == "FAILED", state  # the training exited non-zero after saving, not killed
    retries = [j for j in run["logs"] if int(j) > int(job)]
    assert retries, run["logs"].keys()
    resumed = _resumed_at(run["logs"][retries[-1]])
    assert resumed is not None and resumed >= epoch, run["logs"][retries[-1]][-3000:]


def test_a_job_killed_for_memory_is_retried_with_more_and_completes(slurm_run):
    if slurm_run["oom"] is None:
        pytest.skip("no writable cgroup v1 memory hierarchy: the cluster enforces no memory limit")
    proc, out_path = slurm_run["oom"]
    proc.wait(timeout=360)
    out = out_path.read_text()
    assert proc.returncode == 0, f"rc {proc.returncode}:\n{out[-6000:]}"
    jobs = _slurm_jobs(out_path.parent / "oom", "train_model", "jets_jet-mlp_plain_1")
    assert len(jobs) == 2, jobs
    # the first: its step killed by the cgroup's OOM handler (the job itself FAILED, as its batch
    # script ends non-zero after the step), 720 MB asked; the retry 2880 MB, COMPLETED
    steps = {job: state for job, state in _sacct("-j", jobs[0], "--format=JobID,State")}
    assert steps.get(f"{jobs[0]}.0") == "OUT_OF_MEMORY" or steps.get(jobs[0]) == "OUT_OF_MEMORY", steps
    assert _sacct("-X", "-j", jobs[0], "--format=ReqMem") == [["720M"]]
    assert _sacct("-X", "-j", jobs[1], "--format=State,ReqMem") == [["COMPLETED", "2880M"]]
