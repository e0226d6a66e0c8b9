"""Rule make_folds: stratified k folds of the training split, as index files."""

from kdinv.launch.start import run_job

run_job(
    "kdinv.data.splits:write_folds",
    snakemake.log[0],
    None,
    dict(
        train_split=snakemake.input.train,
        k=snakemake.params.k,
        seed=snakemake.params.seed,
        outputs=list(snakemake.output),
        scaling=snakemake.params.scaling,
    ),
)
