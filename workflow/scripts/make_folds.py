"""Rule make_folds: stratified k folds of the training split, as index files."""

from kdinv.data.splits import write_folds
from kdinv.runtime import start_job

log = start_job(snakemake.log[0])
write_folds(
    snakemake.input.train,
    snakemake.params.k,
    snakemake.params.seed,
    list(snakemake.output),
    scaling=snakemake.params.scaling,
)
log.info("wrote %d folds (seed %d)", snakemake.params.k, snakemake.params.seed)
