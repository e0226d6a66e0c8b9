"""What the SLURM executor plugin is told about its jobs (kdinv.cluster). The states are those sacct
and squeue printed on the local test cluster (tests/slurm) with accounting and preemption."""

from __future__ import annotations

import asyncio
import sys
import types

import pytest

from kdinv import cluster


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


def test_the_plugins_status_query_is_wrapped_once(monkeypatch):
    calls = []

    async def query_job_status(command, logger):
        calls.append(command)
        return {"2": "CANCELLED by 0", "3": "PENDING"}, 0.01

    fake = types.ModuleType(cluster.PLUGIN)
    fake.query_job_status = query_job_status
    monkeypatch.setitem(sys.modules, cluster.PLUGIN, fake)
    assert cluster.install() and cluster.install()
    states, seconds = asyncio.run(fake.query_job_status("sacct ...", None))
    assert states == {"2": "CANCELLED", "3": "PENDING"} and seconds == 0.01
    assert calls == ["sacct ..."]


def test_the_wrapper_is_installed_only_where_the_plugin_is_loaded(monkeypatch):
    monkeypatch.delitem(sys.modules, cluster.PLUGIN, raising=False)
    assert cluster.install() is False


def test_the_pinned_plugin_still_has_the_status_query_the_fix_wraps():
    plugin = pytest.importorskip(cluster.PLUGIN)
    assert asyncio.iscoroutinefunction(plugin.query_job_status)
    # the states the fix relies on: failures the plugin resubmits, PREEMPTED counted as running
    import inspect

    source = inspect.getsource(plugin.Executor.check_active_jobs)
    assert '"CANCELLED"' in source and 'status == "PREEMPTED"' in source
    assert "await query_job_status(" in source


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
