"""Rule plot_tradeoff: invariance against accuracy per row, recipe and temperature."""

from kdinv.analysis.figures import plot_tradeoff
from kdinv.runtime import start_job

log = start_job(snakemake.log[0])
plot_tradeoff(snakemake.input[0], snakemake.params.rows, snakemake.output.png, snakemake.output.pdf)
