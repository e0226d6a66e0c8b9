"""kdinv: the library behind the workflow's scripts.

Modules: ``config`` (validation beyond the schema), ``mnist`` (MNIST sources and preprocessing),
``datasets`` (dataset-independent loading, folds and symmetry transformations), ``models``,
``losses``, ``metrics``, ``training`` and ``evaluation``. Library functions take paths and plain
values, never the ``snakemake`` object.
"""
