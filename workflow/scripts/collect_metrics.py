"""Rule collect_metrics: every per-model table into results/metrics.parquet."""

from kdinv.launch.start import run_job

run_job(
    "kdinv.analysis.tables:collect_metrics",
    snakemake.log[0],
    None,
    dict(paths=list(snakemake.input), out=snakemake.output[0]),
)
