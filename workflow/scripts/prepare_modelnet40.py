"""Rule prepare_modelnet40: meshes -> normalised point clouds, the train and test split files."""

from kdinv.runtime import run_job

run_job(
    "kdinv.entrypoints:prepare_modelnet40",
    snakemake.log[0],
    1,
    dict(
        manifest=snakemake.input[0],
        num_points=snakemake.params.num_points,
        seed=snakemake.params.seed,
        # meshes are read and sampled in this many processes; torch itself uses one thread
        processes=snakemake.threads,
        outputs={"train": snakemake.output.train, "test": snakemake.output.test},
    ),
)
