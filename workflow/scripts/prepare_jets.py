"""Rule prepare_jets: h5 files -> (pT, eta_rel, phi_rel) of the leading constituents, per split."""

from kdinv.data.splits import save_split
from kdinv.data.jets import CLASSES, list_h5_files, preprocess_jets
from kdinv.runtime import read_source_manifest, start_job

log = start_job(snakemake.log[0], 1)
files = list_h5_files(read_source_manifest(snakemake.input[0]))
for split in ("train", "test"):
    x, y = preprocess_jets(files[split], n_constituents=snakemake.params.n_constituents, pt_min=snakemake.params.pt_min)
    save_split(x, y, len(CLASSES), snakemake.output[split], classes=list(CLASSES))
    log.info("%s: %d files -> %s", split, len(files[split]), x.shape)
