"""Rule fetch_mnist: the four raw MNIST files from the configured source."""

from pathlib import Path

from kdinv.data.mnist import copy_local_mnist, download_mnist
from kdinv.data.offline.mnist import write_offline_mnist
from kdinv.runtime import start_job

log = start_job(snakemake.log[0])
spec = snakemake.params.spec
dest = Path(snakemake.output[0]).parent
log.info("fetching MNIST into %s: %s", dest, spec)
if spec["source"] == "download":
    download_mnist(spec["url"], dest)
elif spec["source"] == "local":
    copy_local_mnist(spec["local_dir"], dest, verify_checksums=spec["verify_checksums"])
else:
    write_offline_mnist(dest, seed=spec["seed"], test_fraction=spec["offline_test_fraction"])
