"""Rule plot_figure1: the paper's Figure 1 from the collected metric table."""

from kdinv.launch.start import run_job

run_job(
    "kdinv.analysis.figures:plot_figure1",
    snakemake.log[0],
    None,
    dict(
        metrics_path=snakemake.input[0],
        rows=snakemake.params.rows,
        temperatures=snakemake.params.temperatures,
        out_png=snakemake.output.png,
        out_pdf=snakemake.output.pdf,
    ),
)
