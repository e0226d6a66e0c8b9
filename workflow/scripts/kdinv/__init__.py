"""kdinv: the library behind the workflow's scripts. It never imports Snakemake: its functions take
paths and plain values. Each rule's script hands its job to :func:`kdinv.runtime.run_job`, which
calls the rule's function in :mod:`kdinv.entrypoints`.

Top level:

- ``config``: validation of the config beyond its JSON schema, and the runs the rows need;
- ``paths``: the path grammar of ``results/`` (run folders, wildcards, evaluation tables);
- ``jobs``: the training and distillation jobs (the teacher gate and the recipe's loss);
- ``evaluation``: the evaluation jobs, the teacher gate and the transformed copies of IM;
- ``training``: the training loop shared by training and distillation (resume, precision);
- ``metrics``: the paper's six metrics over a whole split;
- ``io``: tensor files, written atomically and loaded without executing code;
- ``runtime``: a job's start-up (log file, threads), ``run_job`` and the fetch rules' manifests;
- ``entrypoints``: the job of each rule's script; ``forkserver``: runs jobs in children of a
  process that has imported torch and the library once;
- ``cluster``: the SLURM job states the workflow reports to Snakemake.

Packages, by concern:

- ``data``: dataset kinds (``mnist``, ``modelnet``, ``jets``), downloads, split files and folds,
  input scaling, and ``offline`` generators of look-alike data for the demo and CI;
- ``symmetry``: the symmetry transformations (augmentation, the invariance metric, finite groups)
  and their catalog;
- ``models``: architectures, the registry that builds them from the config, what each reads and
  is invariant to, wrappers (group averaging) and the checkpoint format;
- ``distill``: distillation losses and the recipes;
- ``analysis``: the collected metric table, Figure 1, the trade-off figure, training curves,
  statistics, the claims and the findings.
"""
