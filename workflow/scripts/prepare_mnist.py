"""Rule prepare_mnist: raw IDX files -> scaled, padded train and test split files."""

from kdinv.runtime import run_job

run_job(
    "kdinv.entrypoints:prepare_mnist",
    snakemake.log[0],
    snakemake.threads,
    dict(
        raw_file=snakemake.input[0],
        pad_to=snakemake.params.pad_to,
        out_train=snakemake.output.train,
        out_test=snakemake.output.test,
    ),
)
