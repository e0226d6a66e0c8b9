"""Rule train_model: one supervised training (model, plain or augmented data, fold)."""

from kdinv.jobs import train_model
from kdinv.runtime import asked_for_gpu, require_visible_gpu, start_job

log = start_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
require_visible_gpu(
    p.device, asked_for_gpu(snakemake.resources),
    f"{snakemake.rule} " + " ".join(f"{k}={v}" for k, v in snakemake.wildcards.items()),
)
log.info("seed %d", p.seed)
train_model(
    train_split=snakemake.input.train,
    fold_file=snakemake.input.fold,
    model_spec=p.spec,
    symmetry=p.symmetry,
    seed=p.seed,
    device=p.device,
    precision=p.precision,
    out_model=snakemake.output.model,
    out_logits=snakemake.output.logits,
    wildcards=dict(snakemake.wildcards.items()),
    # read from the config, not tracked params: how often the resume state is saved cannot change
    # a result, so editing them reruns nothing
    resume_every=snakemake.config["resume_every"],
    resume_minutes=snakemake.config["resume_minutes"],
)
