"""Rule training_curves: the per-epoch histories of every checkpoint, as a table and a figure."""

from kdinv.runtime import run_job

run_job(
    "kdinv.entrypoints:plot_curves",
    snakemake.log[0],
    None,
    dict(
        checkpoints=list(snakemake.input),
        out_table=snakemake.output.table,
        out_png=snakemake.output.png,
        out_pdf=snakemake.output.pdf,
    ),
)
