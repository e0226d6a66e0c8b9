"""Rule collect_metrics: every per-model table into results/metrics.parquet."""

from kdinv.runtime import start_job
from kdinv.analysis.tables import collect_metrics

log = start_job(snakemake.log[0])
table = collect_metrics(list(snakemake.input), snakemake.output[0])
log.info("collected %d rows from %d files", len(table), len(snakemake.input))
