"""How a rule's job is launched: its start-up (log file, threads, the GPU check; :mod:`.start`),
the fork server that runs jobs in children of a process that has imported torch once
(:mod:`.forkserver`), the placement of local jobs on the GPUs of a workstation (:mod:`.gpus`) and
the fix of the job states that Snakemake's SLURM plugin reports (:mod:`.slurm`).

None of it computes a result: a job's outputs are the same whichever way it was launched."""
