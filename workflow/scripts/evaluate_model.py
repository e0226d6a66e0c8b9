"""Rules evaluate_trained and evaluate_distilled: the metrics of one model on the test split."""

from kdinv.jobs import evaluate_model
from kdinv.runtime import asked_for_gpu, require_visible_gpu, start_job

log = start_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
require_visible_gpu(
    p.device, asked_for_gpu(snakemake.resources),
    f"{snakemake.rule} " + " ".join(f"{k}={v}" for k, v in snakemake.wildcards.items()),
)
references = dict(zip(p.get("references", []), snakemake.input.get("references", [])))
table = evaluate_model(
    model_file=snakemake.input.model,
    test_split=snakemake.input.test,
    symmetries=p.symmetries,
    im_seed=p.im_seed,
    references=references,
    identifiers=p.identifiers,
    device=p.device,
    batch_size=p.batch_size,
    out_metrics=snakemake.output.metrics,
    out_logits=snakemake.output.logits,
)
log.info("metrics:\n%s", table.to_string())
