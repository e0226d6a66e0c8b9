"""Rule prepare_jets: h5 files -> (pT, eta_rel, phi_rel) of the leading constituents, per split."""

from kdinv.runtime import run_job

run_job(
    "kdinv.entrypoints:prepare_jets",
    snakemake.log[0],
    1,
    dict(
        manifest=snakemake.input[0],
        n_constituents=snakemake.params.n_constituents,
        pt_min=snakemake.params.pt_min,
        outputs={"train": snakemake.output.train, "test": snakemake.output.test},
    ),
)
