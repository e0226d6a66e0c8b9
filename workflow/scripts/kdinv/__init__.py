"""kdinv: the library behind the workflow's scripts. It never imports Snakemake: its functions take
paths and plain values. Each rule's script names the library function its job runs and hands it,
with its arguments, to :func:`kdinv.launch.start.run_job`.

Top level:

- ``config``: validation of the config beyond its JSON schema, and the runs the rows need;
- ``paths``: the path grammar of ``results/`` (run folders, wildcards, evaluation tables);
- ``jobs``: the training and distillation jobs (the teacher gate and the recipe's loss);
- ``evaluation``: the evaluation jobs, the teacher gate and the transformed copies of IM;
- ``training``: the training loop shared by training and distillation (resume, precision);
- ``metrics``: the paper's six metrics over a whole split;
- ``io``: tensor files, written atomically and loaded without executing code.

Packages, by concern:

- ``data``: dataset kinds (``mnist``, ``modelnet``, ``jets``), downloads, split files and folds,
  input scaling, and ``offline`` generators of look-alike data for the demo and CI;
- ``symmetry``: the symmetry transformations (augmentation, the invariance metric, finite groups)
  and their catalog;
- ``models``: architectures, the registry that builds them from the config, what each reads and
  is invariant to, wrappers (group averaging) and the checkpoint format;
- ``distill``: distillation losses and the recipes;
- ``launch``: how a rule's job is launched: its start-up and ``run_job``, the fork server, the
  placement on a workstation's GPUs, the fix of the SLURM plugin's job states;
- ``analysis``: the collected metric table, Figure 1, the trade-off figure, training curves,
  statistics, the claims and the findings.
"""
