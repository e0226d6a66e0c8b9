"""Rule prepare_modelnet40: meshes -> normalised point clouds, the train and test split files."""

from kdinv.data.splits import save_split
from kdinv.data.modelnet import prepare_modelnet
from kdinv.runtime import read_source_manifest, start_job

log = start_job(snakemake.log[0], 1)
source = read_source_manifest(snakemake.input[0])
log.info("sampling %d points per mesh of %s with %d processes", snakemake.params.num_points, source, snakemake.threads)
data = prepare_modelnet(source, snakemake.params.num_points, snakemake.params.seed, processes=snakemake.threads)
classes = data["classes"]
for split in ("train", "test"):
    x, y = data[split]
    save_split(x, y, len(classes), snakemake.output[split], classes=list(classes))
    log.info("%s: %s points, %d classes", split, x.shape, len(classes))
