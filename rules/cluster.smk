# What a SLURM run checks before its first submission (kdinv/launch/slurm.py, docs/cluster.md).

import os

from snakemake.exceptions import WorkflowError

from kdinv.launch.slurm import (
    NotInForce,
    forward_sigterm_to_jobs,
    gpu_jobs_without_partition,
    install as install_slurm_state_fix,
)

# The fix of the job states the SLURM executor plugin reads (cancelled, preempted, held, never
# startable, vanished jobs are reported failed instead of waited on forever), put in force in
# the process that submits the jobs. A SLURM run stops at its start if it is not in force.
SLURM_STATE_FIX_PROBLEM = None
if workflow.is_main_process:
    try:
        install_slurm_state_fix(
            grace_seconds=60 * config["job_resources"]["stuck_minutes"], logger=logger
        )
    except NotInForce as problem:
        SLURM_STATE_FIX_PROBLEM = str(problem)


# Inside a SLURM job: the early SIGTERM (--signal, scancel, a preemption) reaches every process
# of the job step: this Snakemake (whose scheduler then waits for the running job), the shell it
# starts the script in, and the script. Where bash stays the script's parent (RHEL 8's bash 4.4
# runs "set -euo pipefail; python ..." as a child), bash dies of it at once, Snakemake reports
# the job failed and exits, and the step ends while the training still writes its resume state
# (235 MB at paper scale); what is left of the step may be killed with it (proctrack/cgroup).
# exec makes the shell become the script, as newer bash does by itself: only the script handles
# the signal, and Snakemake sees it end after its save.
#
# And where the cluster tracks processes with proctrack/cgroup (most do), SLURM sends that
# SIGTERM to the step's task only, this Snakemake, never to the script: Snakemake forwards it to
# the script (kdinv/launch/slurm.py forward_sigterm_to_jobs). Without it the local cluster with
# proctrack/cgroup showed no job saving on --signal, scancel or preemption.
if not workflow.is_main_process and "SLURM_JOB_ID" in os.environ:
    shell.prefix("set -euo pipefail; exec ")
    if not forward_sigterm_to_jobs():
        logger.warning(
            "this Snakemake has no JobScheduler.exit_gracefully: SIGTERM is not forwarded "
            "to the job's script, which may then not save its resume state (kdinv/launch/slurm.py)"
        )


onstart:
    if (
        workflow.executor_plugin is not None
        and workflow.executor_plugin.name == "slurm"
    ):
        if SLURM_STATE_FIX_PROBLEM is not None:
            raise WorkflowError(
                f"not submitting any job: {SLURM_STATE_FIX_PROBLEM}"
            )
        refused = gpu_jobs_without_partition(workflow.dag.needrun_jobs())
        if refused:
            raise WorkflowError(
                "not submitting any job: these jobs ask for a GPU but name no partition, so "
                "SLURM would put them in the cluster's default partition: "
                + "; ".join(refused)
                + ". Set slurm_partition for their rules in profiles/slurm (set-resources), or, "
                "if your default partition has GPUs, set default-resources: "
                "gpus_in_default_partition=1 there (docs/cluster.md)."
            )
        arrays = getattr(workflow.executor_settings, "array_jobs", None) or ""
        arrays = {
            r.strip() for r in arrays.replace(";", ",").split(",") if r.strip()
        }
        if arrays & {"all", "train_model", "distill_student"}:
            raise WorkflowError(
                "not submitting any job: --slurm-array-jobs must not include train_model or "
                "distill_student (nor be 'all'): array tasks run without srun, so the early "
                "SIGTERM that makes them save their resume state reaches nothing (docs/cluster.md)"
            )
        logger.info(
            "SLURM: the workflow's fix of job states is in force (kdinv/launch/slurm.py)"
        )
