"""Rule findings: fold-paired comparisons per row and temperature, and a verdict per claim."""

from kdinv.analysis.findings import write_findings
from kdinv.runtime import start_job

log = start_job(snakemake.log[0])
findings = write_findings(
    snakemake.input[0],
    snakemake.params.rows,
    snakemake.output.table,
    snakemake.output.markdown,
    snakemake.output.html,
)
log.info("%d comparisons written", len(findings))
