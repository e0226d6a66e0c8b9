"""Rule write_row_tables: one CSV per figure row, mean and s.d. over folds of every metric."""

from kdinv.launch.start import run_job

run_job(
    "kdinv.analysis.tables:write_row_tables",
    snakemake.log[0],
    None,
    dict(metrics_path=snakemake.input[0], rows=snakemake.params.rows, out_dir=snakemake.output[0]),
)
