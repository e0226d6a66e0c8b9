"""Rule fetch_mnist: the four raw MNIST files from the configured source."""

from pathlib import Path

from kdinv.mnist import copy_local_mnist, download_mnist, write_offline_mnist
from kdinv.runtime import start_job

log = start_job(snakemake.log[0])
params = snakemake.params
dest = Path(snakemake.output[0]).parent
log.info("fetching MNIST from source %r into %s", params.source, dest)
if params.source == "download":
    download_mnist(params.url, dest, retries=params.retries)
elif params.source == "local":
    copy_local_mnist(params.local_dir, dest, verify_checksums=params.verify)
else:
    write_offline_mnist(dest, seed=params.seed, test_fraction=params.test_fraction)
