"""Rule fetch_jets: the hls4ml jet h5 files from the configured source, named in source.json."""

from pathlib import Path

from kdinv.data.jets import download_jets, resolve_local_jets
from kdinv.data.offline.jets import write_offline_jets
from kdinv.runtime import start_job, write_source_manifest

log = start_job(snakemake.log[0])
spec = snakemake.params.spec
raw = Path(snakemake.output[0]).parent
log.info("fetching the jets into %s: %s", raw, spec)
if spec["source"] == "download":
    source = download_jets(spec["url"], raw, retries=3)
elif spec["source"] == "local":
    source = resolve_local_jets(spec["local_dir"], extract_to=raw / "h5")
else:
    source = raw / "h5"
    write_offline_jets(
        source, seed=spec["seed"], files=spec["offline_files"], jets_per_file=spec["offline_jets_per_file"]
    )
write_source_manifest(snakemake.output[0], source, origin=spec["source"])
log.info("h5 files at %s", source)
