"""Rule fetch_modelnet40: the ModelNet40 meshes from the configured source, named in source.json."""

from pathlib import Path

from kdinv.data.modelnet import download_modelnet, resolve_local_modelnet
from kdinv.data.offline.modelnet import write_offline_modelnet
from kdinv.runtime import start_job, write_source_manifest

log = start_job(snakemake.log[0])
spec = snakemake.params.spec
raw = Path(snakemake.output[0]).parent
log.info("fetching ModelNet40 into %s: %s", raw, spec)
if spec["source"] == "download":
    source = download_modelnet(spec["url"], raw, retries=3)
elif spec["source"] == "local":
    source = resolve_local_modelnet(spec["local_dir"])
else:
    source = raw / "ModelNet40"
    write_offline_modelnet(
        source,
        seed=spec["seed"],
        train_per_class=spec["offline_train_per_class"],
        test_per_class=spec["offline_test_per_class"],
    )
write_source_manifest(snakemake.output[0], source, origin=spec["source"])
log.info("meshes at %s", source)
