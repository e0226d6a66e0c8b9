"""Rule training_curves: the per-epoch histories of every checkpoint, as a table and a figure."""

from pathlib import Path

from kdinv.analysis.curves import curves_table, plot_curves
from kdinv.runtime import start_job

log = start_job(snakemake.log[0])
curves = curves_table(list(snakemake.input))
tmp = Path(snakemake.output.table).with_suffix(".tmp.parquet")
curves.to_parquet(tmp, index=False)
tmp.replace(snakemake.output.table)
plot_curves(curves, snakemake.output.png, snakemake.output.pdf)
log.info("%d epochs of %d runs", len(curves), curves["run"].nunique())
