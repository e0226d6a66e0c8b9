"""Rule make_folds: stratified k folds of the training split, as index files."""

from kdinv.runtime import run_job

run_job(
    "kdinv.entrypoints:make_folds",
    snakemake.log[0],
    None,
    dict(
        train=snakemake.input.train,
        k=snakemake.params.k,
        seed=snakemake.params.seed,
        outputs=list(snakemake.output),
        scaling=snakemake.params.scaling,
    ),
)
