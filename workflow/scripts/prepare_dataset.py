"""Rules prepare_<kind> (prepare_mnist, prepare_modelnet40, prepare_jets): the fetched data ->
the train and test split files."""

from kdinv.launch.start import run_job

run_job(
    "kdinv.data.prepare:prepare_dataset",
    snakemake.log[0],
    1,
    dict(
        kind=snakemake.config["datasets"][snakemake.wildcards.dataset]["kind"],
        fetched=list(snakemake.input),
        outputs={"train": snakemake.output.train, "test": snakemake.output.test},
        # the data are read in this many processes; torch itself uses one thread
        processes=snakemake.threads,
        params=dict(snakemake.params.items()),
    ),
)
