"""Rule plot_figure1: the paper's Figure 1 from the collected metric table."""

from kdinv.analysis.figures import plot_figure1
from kdinv.runtime import start_job

log = start_job(snakemake.log[0])
plot_figure1(
    snakemake.input[0],
    rows=snakemake.params.rows,
    temperatures=snakemake.params.temperatures,
    out_png=snakemake.output.png,
    out_pdf=snakemake.output.pdf,
)
