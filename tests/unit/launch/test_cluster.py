"""What the SLURM executor plugin is told about its jobs (kdinv.launch.slurm). The states are those sacct
and squeue printed on the local test cluster (tests/slurm) with accounting and preemption."""

from __future__ import annotations

import asyncio
import os
import sys
import types
from pathlib import Path

import pytest

from kdinv.launch import slurm as cluster

ROOT = Path(__file__).resolve().parents[3]


def test_a_cancelled_job_is_reported_by_its_state_alone():
    # sacct -X --parsable2 --format=JobIdRaw,State after `scancel 2`: "2|CANCELLED by 0"
    states = {"2": "CANCELLED by 0", "3": "RUNNING", "4": "COMPLETED", "5": "TIMEOUT"}
    assert cluster.normalise(states, ask_squeue=None) == {
        "2": "CANCELLED", "3": "RUNNING", "4": "COMPLETED", "5": "TIMEOUT",
    }


def test_a_preempted_job_is_failed_unless_slurm_requeued_it():
    # PreemptMode=REQUEUE: sacct shows PREEMPTED for a minute or two while squeue shows the
    # job PENDING again; PreemptMode=CANCEL: both show PREEMPTED until squeue forgets the job
    states = {"4": "PREEMPTED", "5": "PREEMPTED", "6": "PREEMPTED", "7": "RUNNING"}
    asked = []

    def squeue(jobs):
        asked.append(sorted(jobs))
        return {"4": "PENDING", "5": "PREEMPTED"}  # 6: purged after MinJobAge

    assert cluster.normalise(states, ask_squeue=squeue) == {
        "4": "PREEMPTED", "5": "CANCELLED", "6": "CANCELLED", "7": "RUNNING",
    }
    assert asked == [["4", "5", "6"]]  # squeue is asked only about the preempted jobs


def test_squeue_is_asked_once_about_a_preempted_job_that_was_not_requeued():
    asked, ended = [], set()

    def squeue(jobs):
        asked.append(sorted(jobs))
        return {}

    for _ in range(3):  # sacct keeps listing it as PREEMPTED at every status check
        assert cluster.normalise({"5": "PREEMPTED"}, ask_squeue=squeue, ended=ended) == {"5": "CANCELLED"}
    assert asked == [["5"]] and ended == {"5"}


def test_a_preempted_job_stays_running_when_squeue_cannot_be_asked():
    assert cluster.normalise({"4": "PREEMPTED"}, ask_squeue=lambda jobs: None) == {"4": "PREEMPTED"}


# A stand-in for the plugin: its status loop calls query_job_status by its module-global name,
# as snakemake-executor-plugin-slurm 2.8.0's Executor.check_active_jobs does.
FAKE_PLUGIN = """
async def query_job_status(command, logger):
    CALLS.append(command)
    return dict(ANSWER), 0.01

class Executor:
    async def check_active_jobs(self, active_jobs):
        states, _ = await query_job_status("sacct ...", None)
        for job in active_jobs:
            if states.get(job.external_jobid) not in ("CANCELLED", "COMPLETED"):
                yield job
"""


def fake_plugin(source=FAKE_PLUGIN, answer=None):
    module = types.ModuleType(cluster.PLUGIN)
    module.CALLS, module.ANSWER = [], answer or {"2": "CANCELLED by 0", "3": "PENDING"}
    exec(compile(source, "fake_plugin.py", "exec"), module.__dict__)  # noqa: S102 - the test's own stand-in plugin
    return module


TESTED = {name: versions[0] for name, versions in cluster.TESTED.items()}


def active(*ids):
    job = types.SimpleNamespace(is_group=lambda: False, name="train_model", wildcards_dict={"fold": "0"})
    return [types.SimpleNamespace(external_jobid=i, job=job) for i in ids]


async def still_active(executor_cls, jobs):
    return [j.external_jobid async for j in executor_cls().check_active_jobs(jobs)]


def test_the_plugins_status_query_is_wrapped_once_and_its_loop_calls_the_wrapper():
    plugin = fake_plugin()
    fix = cluster.install(plugin=plugin, versions=TESTED)
    fix.ask_reasons = lambda jobs: {"3": ("PENDING", "Priority")}
    assert cluster.install(plugin=plugin, versions=TESTED) is fix
    states, seconds = asyncio.run(plugin.query_job_status("sacct ...", None))
    assert states == {"2": "CANCELLED", "3": "PENDING"} and seconds == 0.01
    assert asyncio.run(still_active(plugin.Executor, active("2", "3"))) == ["3"]
    assert plugin.CALLS == ["sacct ...", "sacct ..."]
    assert fix.described == {"2": "rule train_model, fold=0", "3": "rule train_model, fold=0"}


def test_an_untested_plugin_version_stops_the_run_naming_the_versions():
    versions = {**TESTED, "snakemake-executor-plugin-slurm": "2.9.0",
                "snakemake-executor-plugin-slurm-jobstep": None}
    with pytest.raises(cluster.NotInForce) as caught:
        cluster.install(plugin=fake_plugin(), versions=versions)
    message = str(caught.value)
    assert "snakemake-executor-plugin-slurm 2.9.0 (tested: 2.8.0)" in message
    assert "snakemake-executor-plugin-slurm-jobstep not installed (tested: 0.6.1)" in message


def test_a_status_loop_that_does_not_resolve_the_wrapper_stops_the_run():
    # an upgrade that binds the function under another name (or in another module): the wrapper
    # would be installed and never called
    source = (
        FAKE_PLUGIN.replace('await query_job_status("sacct', 'await _query("sacct') + "\n_query = query_job_status\n"
    )
    with pytest.raises(cluster.NotInForce, match="does not call the workflow's fix"):
        cluster.install(plugin=fake_plugin(source), versions=TESTED)
    without = fake_plugin("class Executor:\n    pass\n")
    with pytest.raises(cluster.NotInForce, match="has no query_job_status"):
        cluster.install(plugin=without, versions=TESTED)


@pytest.mark.slow
def test_the_installed_plugin_takes_the_fix():
    """In a fresh process, as the workflow does it (the real plugin, imported by install())."""
    import subprocess

    code = (
        "from kdinv.launch import slurm as cluster\n"
        "fix = cluster.install(grace_seconds=5)\n"
        "import snakemake_executor_plugin_slurm as p\n"
        "loop = p.Executor.check_active_jobs.kdinv_loop\n"
        "assert loop.__globals__['query_job_status'].kdinv_fix is fix\n"
        "print('in force', fix.grace_seconds)\n"
    )
    scripts = Path(cluster.__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(scripts)}, check=False)
    assert proc.returncode == 0 and "in force 5" in proc.stdout, proc.stderr[-3000:]


def test_requirements_pin_the_tested_versions_and_they_are_installed():
    pins = dict(
        line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for name, versions in cluster.TESTED.items():
        assert pins.get(name) in versions, (name, pins.get(name), versions)
    assert cluster.version_problems(cluster.installed_versions()) == []


# --- jobs that would wait forever --------------------------------------------------------------


class Log:
    def __init__(self):
        self.errors, self.warnings = [], []

    def error(self, text):
        self.errors.append(text)

    def warning(self, text):
        self.warnings.append(text)


def state_fix(reasons, grace=600.0):
    clock = [0.0]
    cancelled = []
    fix = cluster.StateFix(grace, Log(), ask_squeue=lambda jobs: {}, ask_reasons=lambda jobs: dict(reasons),
                           cancel=cancelled.append, clock=lambda: clock[0])
    fix.described = {"7": "rule train_model, dataset=jets, fold=0", "8": "rule distill_student, fold=1"}
    return fix, clock, cancelled


@pytest.mark.parametrize("reason", ["PartitionTimeLimit", "QOSMaxWallDurationPerJobLimit",
                                    "AssocMaxWallDurationPerJobLimit", "BadConstraints"])
def test_a_job_pending_on_a_limit_it_can_never_meet_fails_at_once(reason):
    fix, _, cancelled = state_fix({"7": ("PENDING", reason), "8": ("PENDING", "Priority")})
    assert fix({"7": "PENDING", "8": "PENDING"}, "sacct ...") == {"7": "CANCELLED", "8": "PENDING"}
    assert cancelled == ["7"]
    [error] = fix.logger.errors
    assert error.startswith(f"SLURM job 7 (rule train_model, dataset=jets, fold=0): PENDING ({reason})")
    # sacct lists it as PENDING until the cancellation reaches it: still failed, reported once
    assert fix({"7": "PENDING"}, "sacct ...") == {"7": "CANCELLED"} and len(fix.logger.errors) == 1


@pytest.mark.parametrize("state, reason", [
    ("PENDING", "JobHeldAdmin"), ("PENDING", "JobHeldUser"), ("PENDING", "launch failed requeued held"),
    ("REQUEUE_HOLD", "JobHeldUser"), ("SPECIAL_EXIT", "JobHeldUser"),
    ("PENDING", "ReqNodeNotAvail, UnavailableNodes:node7"), ("PENDING", "PartitionDown"),
])
def test_a_held_job_fails_after_the_grace_unless_it_is_released(state, reason):
    fix, clock, cancelled = state_fix({"8": (state, reason)}, grace=600)
    assert fix({"8": "PENDING"}) == {"8": "PENDING"}
    clock[0] = 599
    assert fix({"8": "PENDING"}) == {"8": "PENDING"} and not cancelled
    clock[0] = 600
    assert fix({"8": "PENDING"}) == {"8": "CANCELLED"} and cancelled == ["8"]
    [error] = fix.logger.errors
    assert error.startswith(f"SLURM job 8 (rule distill_student, fold=1): {state} ({reason}) for 10.0 min")
    # released before the grace ended: waits on, and a later hold counts afresh
    fix, clock, cancelled = state_fix({"8": (state, reason)}, grace=600)
    fix({"8": "PENDING"})
    clock[0] = 500
    fix.ask_reasons = lambda jobs: {"8": ("PENDING", "Priority")}
    assert fix({"8": "PENDING"}) == {"8": "PENDING"}
    fix.ask_reasons = lambda jobs: {"8": (state, reason)}
    clock[0] = 1000
    assert fix({"8": "PENDING"}) == {"8": "PENDING"} and not cancelled


def test_a_job_held_since_its_submission_fails_though_sacct_does_not_list_it():
    # sacct -X --starttime ... --endtime now lists no job that was never eligible to start: the
    # plugin then waits for it to appear, forever; squeue shows it held
    fix, clock, cancelled = state_fix({"8": ("PENDING", "JobHeldUser")}, grace=60)
    fix.active = {"7", "8"}
    assert fix({"7": "RUNNING"}, "sacct -X ...") == {"7": "RUNNING"}
    clock[0] = 60
    assert fix({"7": "RUNNING"}, "sacct -X ...") == {"7": "RUNNING", "8": "CANCELLED"}
    assert cancelled == ["8"] and "SLURM job 8 (rule distill_student" in fix.logger.errors[0]
    # a job neither lists (just submitted): left to the plugin, which waits for it
    fix, clock, _ = state_fix({}, grace=0)
    fix.active = {"9"}
    clock[0] = 100
    assert fix({}, "sacct -X ...") == {} and not fix.logger.errors


def test_jobs_waiting_for_resources_or_priority_wait_on():
    fix, clock, cancelled = state_fix({"7": ("PENDING", "Resources"), "8": ("PENDING", "Priority")}, grace=0)
    clock[0] = 10 ** 6
    states = {"7": "PENDING", "8": "PENDING", "9": "RUNNING"}
    assert fix(dict(states)) == states
    assert not cancelled and not fix.logger.errors


def test_a_revoked_job_fails_at_once():
    fix, _, _ = state_fix({})
    assert fix({"7": "REVOKED"}) == {"7": "CANCELLED"}
    assert "SLURM job 7 (rule train_model" in fix.logger.errors[0] and "REVOKED" in fix.logger.errors[0]


def test_a_job_that_vanished_from_squeue_fails():
    fix, _, _ = state_fix({})
    fix.active = {"7", "8"}
    squeue = "squeue --format=%i|%T --states=all --noheader --name run"
    assert fix({"7": "RUNNING", "8": "RUNNING"}, squeue) == {"7": "RUNNING", "8": "RUNNING"}
    assert fix({"8": "RUNNING"}, squeue) == {"7": "CANCELLED", "8": "RUNNING"}
    assert "SLURM job 7 (rule train_model" in fix.logger.errors[0] and "no longer" in fix.logger.errors[0]
    # a job the executor no longer waits for (reported done) may leave squeue's list
    fix.active = set()
    assert fix({}, squeue) == {}
    # sacct keeps every job for days: a job it stops listing is the plugin's to judge
    fix, _, _ = state_fix({})
    fix({"7": "RUNNING"}, "sacct -X ...")
    assert fix({}, "sacct -X ...") == {}


def test_what_asks_for_a_gpu():
    assert cluster.wants_gpu({"gpu": 1}) and cluster.wants_gpu({"gpu": 0, "gres": "shard:4"})
    assert cluster.wants_gpu({"gres": "gpu:a100:1"})
    assert not cluster.wants_gpu({"gpu": 0, "gres": ""}) and not cluster.wants_gpu({})

    def job(name, **resources):
        return types.SimpleNamespace(name=name, resources=resources)

    jobs = [job("train_model", gpu=1), job("train_model", gpu=1), job("prepare", gpu=0),
            job("distill_student", gpu=1, slurm_partition="gpu"),
            job("evaluate_trained", gpu=1, gpus_in_default_partition=1)]
    assert cluster.gpu_jobs_without_partition(jobs) == ["train_model (2 jobs)"]


@pytest.mark.slow
def test_the_pinned_plugin_still_has_the_status_query_the_fix_wraps():
    plugin = pytest.importorskip(cluster.PLUGIN)
    assert asyncio.iscoroutinefunction(plugin.query_job_status)
    # the states the fix relies on: failures the plugin resubmits, PREEMPTED counted as running
    import inspect

    source = inspect.getsource(plugin.Executor.check_active_jobs)
    assert '"CANCELLED"' in source and 'status == "PREEMPTED"' in source
    assert "await query_job_status(" in source


@pytest.mark.slow
def test_the_pinned_plugin_refuses_a_gpu_type_with_a_hyphen():
    """docs/cluster.md: such a type is chosen by partition or node feature (constraint) instead."""
    utils = pytest.importorskip(f"{cluster.PLUGIN}.utils")
    from snakemake_interface_common.exceptions import WorkflowError

    class Resources(dict):
        __getattr__ = dict.__getitem__

    def submit(**resources):
        return utils.set_gres_string(types.SimpleNamespace(resources=Resources(resources))).split()

    assert submit(gpu=1, gpu_model="a100") == ["--gpus=a100:1"]
    with pytest.raises(WorkflowError, match="a100-80gb"):
        submit(gpu=1, gpu_model="a100-80gb")
    with pytest.raises(WorkflowError, match="gpu:a100-80gb:1"):
        submit(gpu=0, gres="gpu:a100-80gb:1")


# --- inside a SLURM job ------------------------------------------------------------------------


def test_sigterm_is_forwarded_to_the_jobs_script(tmp_path):
    """proctrack/cgroup signals only the step's task (the job's Snakemake): it must pass SIGTERM
    on to its child, the script (here a stand-in that records it)."""
    import signal
    import subprocess
    import time

    flag = tmp_path / "got"
    child = subprocess.Popen([sys.executable, "-c", (
        "import signal, sys, time, pathlib\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(flag)!r}).write_text('TERM'), sys.exit(3)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert child.pid in cluster.forward_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 3 and flag.read_text() == "TERM"
    finally:
        if child.poll() is None:
            child.kill()
            time.sleep(0.1)


def test_snakemakes_graceful_exit_forwards_sigterm_first(monkeypatch):
    from snakemake.scheduling import job_scheduler

    calls = []
    original = job_scheduler.JobScheduler.exit_gracefully
    monkeypatch.setattr(job_scheduler.JobScheduler, "exit_gracefully", lambda self, *a: calls.append("exit"))
    monkeypatch.setattr(cluster, "forward_signal", lambda sig, pid=None: calls.append(("forward", sig)))
    assert cluster.forward_sigterm_to_jobs() and cluster.forward_sigterm_to_jobs()
    job_scheduler.JobScheduler.exit_gracefully(None)
    import signal

    assert calls == [("forward", signal.SIGTERM), "exit"]  # wrapped once
    # the pinned Snakemake binds its scheduler's SIGTERM handler to this method
    import inspect

    assert "signal.signal(signal.SIGTERM, self.exit_gracefully)" in inspect.getsource(job_scheduler.JobScheduler)
    assert original.__name__ == "exit_gracefully"


def _fake_squeue(tmp_path, monkeypatch, stdout: str, stderr: str = "", code: int = 0):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "squeue"
    script.write_text(
        f"#!/bin/sh\necho \"$@\" > {tmp_path}/args\nprintf '{stdout}'\nprintf '{stderr}' >&2\nexit {code}\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_squeue_states_and_reasons_read_squeue(tmp_path, monkeypatch):
    _fake_squeue(tmp_path, monkeypatch, "  12|PENDING|JobHeldUser\\n13|RUNNING|None\\n\\n")
    assert cluster.squeue_reasons(["12", "13"]) == {"12": ("PENDING", "JobHeldUser"), "13": ("RUNNING", "None")}
    assert "--format=%i|%T|%r --jobs 12,13" in (tmp_path / "args").read_text()
    _fake_squeue(tmp_path, monkeypatch, "12|PENDING\\n13|COMPLETING\\n")
    assert cluster.squeue_states(["12", "13"]) == {"12": "PENDING", "13": "COMPLETING"}
    # every id purged: squeue says so and exits 1, which is an answer (none known)
    _fake_squeue(tmp_path, monkeypatch, "", "slurm_load_jobs error: Invalid job id specified", 1)
    assert cluster.squeue_states(["12"]) == {} and cluster.squeue_reasons(["12"]) == {}
    # any other failure is no answer
    _fake_squeue(tmp_path, monkeypatch, "", "slurm_load_jobs error: Unable to contact slurm controller", 1)
    assert cluster.squeue_states(["12"]) is None and cluster.squeue_reasons(["12"]) is None
