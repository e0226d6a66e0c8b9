"""Rules fetch_<kind> (fetch_mnist, fetch_modelnet40, fetch_jets): the raw files from the
configured source, in this process (no torch: it runs on the submitting host)."""

from kdinv.data.fetch import fetch_dataset
from kdinv.launch.start import start_job

start_job(snakemake.log[0])
fetch_dataset(
    snakemake.config["datasets"][snakemake.wildcards.dataset]["kind"],
    snakemake.params.spec,
    list(snakemake.output),
)
