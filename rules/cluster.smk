# What a SLURM run checks before its first submission (kdinv/cluster.py, docs/cluster.md).

from snakemake.exceptions import WorkflowError

from kdinv.cluster import (
    NotInForce,
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
        logger.info(
            "SLURM: the workflow's fix of job states is in force (kdinv/cluster.py)"
        )
