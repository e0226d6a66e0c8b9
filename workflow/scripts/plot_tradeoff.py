"""Rule plot_tradeoff: invariance against accuracy per row, recipe and temperature."""

from kdinv.launch.start import run_job

run_job(
    "kdinv.analysis.figures:plot_tradeoff",
    snakemake.log[0],
    None,
    dict(
        metrics_path=snakemake.input[0],
        rows=snakemake.params.rows,
        out_png=snakemake.output.png,
        out_pdf=snakemake.output.pdf,
    ),
)
