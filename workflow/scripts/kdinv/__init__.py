"""kdinv: the library behind the workflow's scripts. It never imports Snakemake: its functions take
paths and plain values, and each rule's script makes one call into :mod:`kdinv.jobs`.

Top level:

- ``config``: validation of the config beyond its JSON schema, and the runs the rows need;
- ``jobs``: one function per rule (train, distil, evaluate);
- ``training``: the training loop shared by training and distillation (resume, precision);
- ``metrics``: the paper's six metrics over a whole split;
- ``io``: tensor files, written atomically and loaded without executing code;
- ``runtime``: a job's start-up (log file, threads), ``run_job`` (how a rule's script runs its
  job) and the fetch rules' manifests;
- ``entrypoints``: the job of each rule's script; ``forkserver``: runs jobs in children of a
  process that has imported torch and the library once.

Packages, by concern:

- ``data``: dataset kinds (``mnist``, ``modelnet``, ``jets``), downloads, split files and folds,
  input scaling, and ``offline`` generators of look-alike data for the demo and CI;
- ``symmetry``: the symmetry transformations (augmentation and the invariance metric);
- ``models``: architectures, the registry that builds them from the config, wrappers and the
  checkpoint format;
- ``distill``: distillation losses;
- ``analysis``: the collected metric table, Figure 1, training curves and the findings.
"""
