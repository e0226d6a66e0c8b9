"""Rules evaluate_trained and evaluate_distilled: the metrics of a group of runs of one fold."""

from kdinv.evaluation import evaluate_runs
from kdinv.runtime import asked_for_gpu, require_visible_gpu, start_job

log = start_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
require_visible_gpu(
    p.device, asked_for_gpu(snakemake.resources),
    f"{snakemake.rule} " + " ".join(f"{k}={v}" for k, v in snakemake.wildcards.items()),
)
table = evaluate_runs(
    runs=p.runs,
    test_split=snakemake.input.test,
    train_split=snakemake.input.train,
    fold_file=snakemake.input.fold,
    symmetries=p.symmetries,
    im_seed=p.im_seed,
    val_seed=p.val_seed,
    device=p.device,
    batch_size=p.batch_size,
    out_metrics=snakemake.output.metrics,
    reference_logits=snakemake.input.get("references"),
    out_logits=snakemake.output.get("logits"),
)
log.info("%d rows for %d runs", len(table), len(p.runs))
