"""Rule row_tables: one CSV per figure row, mean and s.d. over folds of every metric."""

from kdinv.runtime import start_job
from kdinv.analysis.tables import write_row_tables

log = start_job(snakemake.log[0])
paths = write_row_tables(snakemake.input[0], snakemake.params.rows, snakemake.output[0])
log.info("wrote %s", ", ".join(map(str, paths)))
