"""Rule write_run_settings: the validated config, the data sources and the package versions of the run."""

from kdinv.launch.start import run_job

run_job(
    "kdinv.config:write_run_settings",
    snakemake.log[0],
    None,
    dict(config=snakemake.params.config, out=snakemake.output[0]),
)
