"""What snakemake-executor-plugin-slurm is told about its jobs' states.

The plugin (2.8.0, the newest release) asks ``sacct -X --format=JobIdRaw,State`` (or ``squeue``)
for the state of every job of the run and compares each with fixed names. Two states a real
cluster reports fall through those names, and the plugin then counts the job as running forever:

- sacct writes a job cancelled by a user or an administrator as ``CANCELLED by <uid>``;
- a preempted job reads ``PREEMPTED``, which the plugin always counts as running. That is right
  where the site requeues preempted jobs (the job runs again under its job id, and sacct shows
  PREEMPTED until it has started again) and hangs the run where the site cancels them
  (PreemptMode=CANCEL, or a job that may not be requeued): the state stays PREEMPTED.

:func:`install` wraps the plugin's status query so that the plugin sees the first word of each
state (``CANCELLED by 0`` -> ``CANCELLED``, a failure it resubmits with the profile's retries), and
a PREEMPTED job as failed (``CANCELLED``) once squeue shows that it was not requeued: squeue
still lists it as PREEMPTED, or no longer lists it at all. A preempted job that squeue shows
pending or running again stays PREEMPTED for the plugin, which leaves it to SLURM.

The wrapper changes only the states the plugin reads; it is installed by the workflow
(rules/common.smk) into the Snakemake process that submits the jobs.
"""

from __future__ import annotations

import subprocess
import sys

PLUGIN = "snakemake_executor_plugin_slurm"
PREEMPTED = "PREEMPTED"
# what the plugin is told about a preempted job that SLURM did not requeue: one of its failure
# states, so that Snakemake resubmits the job (and the job resumes from its resume state)
NOT_REQUEUED = "CANCELLED"


def first_word(states: dict[str, str]) -> dict[str, str]:
    """``{job id: state}`` with every state cut to its first word (``CANCELLED by 0`` -> ``CANCELLED``)."""
    return {job: (state.split() or [state])[0] for job, state in states.items()}


def squeue_states(job_ids: list[str], timeout: float = 30.0) -> dict[str, str] | None:
    """The states squeue shows now for these job ids (jobs it no longer knows are absent), or None
    when squeue cannot be asked."""
    try:
        proc = subprocess.run(
            ["squeue", "--noheader", "--states=all", "--format=%i|%T", "--jobs", ",".join(job_ids)],
            capture_output=True, text=True, timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # every id unknown (purged after MinJobAge): squeue says so and exits 1
        return {} if "Invalid job id" in proc.stderr else None
    states = {}
    for line in proc.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job:
            states[job] = state.strip()
    return states


def resolve_preempted(states: dict[str, str], now: dict[str, str] | None) -> dict[str, str]:
    """``states`` with each PREEMPTED job that SLURM did not requeue turned into NOT_REQUEUED.

    ``now``: what squeue shows for the preempted jobs (see :func:`squeue_states`); None when it
    could not be asked, which leaves every state as it is until the next status check.
    """
    if now is None:
        return dict(states)
    out = dict(states)
    for job, state in states.items():
        if state == PREEMPTED and now.get(job, PREEMPTED).split()[0] == PREEMPTED:
            out[job] = NOT_REQUEUED
    return out


def normalise(
    states: dict[str, str], logger=None, ask_squeue=squeue_states, ended: set[str] | None = None
) -> dict[str, str]:
    """The states the plugin should see for ``states`` as sacct or squeue printed them.

    ``ended``: the preempted jobs already found not requeued (sacct keeps listing them as
    PREEMPTED); updated in place, so that squeue is asked, and the warning logged, once per job.
    """
    states = first_word(states)
    ended = set() if ended is None else ended
    preempted = [job for job, state in states.items() if state == PREEMPTED and job not in ended]
    out = resolve_preempted(states, ask_squeue(preempted)) if preempted else dict(states)
    new = [job for job in preempted if out[job] != PREEMPTED]
    if new and logger is not None:
        logger.warning(
            f"SLURM job(s) {', '.join(new)} were preempted and not requeued: reported as "
            f"{NOT_REQUEUED}, so that Snakemake resubmits them (they continue from their resume state)"
        )
    ended.update(new)
    for job, state in states.items():
        if state == PREEMPTED and job in ended:
            out[job] = NOT_REQUEUED
    return out


def install() -> bool:
    """Wrap the SLURM executor plugin's status query, if the plugin is loaded in this process
    (the snakemake command line loads every installed executor plugin before it reads the
    workflow). Returns whether the query is wrapped; calling it again changes nothing."""
    plugin = sys.modules.get(PLUGIN)
    if plugin is None:
        return False
    original = getattr(plugin, "query_job_status", None)
    if original is None:
        raise RuntimeError(
            f"{PLUGIN} {getattr(plugin, '__version__', '')} has no query_job_status: the workflow's "
            "fix of its job states (kdinv/cluster.py) does not fit this version; install the version "
            "of requirements.txt"
        )
    if getattr(original, "kdinv_wrapped", False):
        return True

    ended: set[str] = set()

    async def query_job_status(command, logger):
        states, duration = await original(command, logger)
        if states:
            states = normalise(states, logger, ended=ended)
        return states, duration

    query_job_status.kdinv_wrapped = True
    plugin.query_job_status = query_job_status
    return True
