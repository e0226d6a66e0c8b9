"""Rule write_findings: fold-paired comparisons per row and temperature, and a verdict per claim."""

from kdinv.launch.start import run_job

run_job(
    "kdinv.analysis.findings:write_findings",
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
