"""Rule collect_metrics: every per-model table into results/metrics.parquet."""

from kdinv.runtime import run_job

run_job(
    "kdinv.entrypoints:collect_metrics",
    snakemake.log[0],
    None,
    dict(tables=list(snakemake.input), out=snakemake.output[0]),
)
