"""Rule plot_curves: the per-epoch histories of every checkpoint, as a table and a figure."""

from kdinv.launch.start import run_job

run_job(
    "kdinv.analysis.curves:write_curves",
    snakemake.log[0],
    None,
    dict(
        checkpoints=list(snakemake.input),
        out_table=snakemake.output.table,
        out_png=snakemake.output.png,
        out_pdf=snakemake.output.pdf,
    ),
)
