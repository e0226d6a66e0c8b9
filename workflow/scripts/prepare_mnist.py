"""Rule prepare_mnist: raw IDX files -> scaled, padded train and test split files."""

from pathlib import Path

from kdinv.data.splits import save_split
from kdinv.data.mnist import preprocess_mnist
from kdinv.runtime import start_job

log = start_job(snakemake.log[0], snakemake.threads)
data = preprocess_mnist(Path(snakemake.input[0]).parent, pad_to=snakemake.params.pad_to)
save_split(data["train_x"], data["train_y"], 10, snakemake.output.train, classes=[str(d) for d in range(10)])
save_split(data["test_x"], data["test_y"], 10, snakemake.output.test, classes=[str(d) for d in range(10)])
log.info("train %s, test %s", data["train_x"].shape, data["test_x"].shape)
