"""Rule plot_measures: IM, the orbit gap and the Lie derivative per row and model, with controls."""

from kdinv.launch.start import run_job

run_job(
    "kdinv.analysis.figures:plot_measures",
    snakemake.log[0],
    None,
    dict(
        metrics_path=snakemake.input[0],
        rows=snakemake.params.rows,
        out_png=snakemake.output.png,
        out_pdf=snakemake.output.pdf,
    ),
)
