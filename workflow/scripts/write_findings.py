"""Rule findings: fold-paired comparisons per row and temperature, and a verdict per claim."""

from kdinv.runtime import run_job

run_job(
    "kdinv.entrypoints:write_findings",
    snakemake.log[0],
    None,
    dict(
        metrics_path=snakemake.input[0],
        rows=snakemake.params.rows,
        out_parquet=snakemake.output.table,
        out_markdown=snakemake.output.markdown,
        out_html=snakemake.output.html,
    ),
)
