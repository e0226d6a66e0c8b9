"""Rules evaluate_trained and evaluate_distilled: the metrics of a group of runs of one fold."""

from kdinv.launch.start import gpu_request, run_job

p = snakemake.params
run_job(
    "kdinv.evaluation:evaluate_runs",
    snakemake.log[0],
    snakemake.threads,
    dict(
        runs=p.runs,
        test_split=snakemake.input.test,
        train_split=snakemake.input.train,
        fold_file=snakemake.input.fold,
        symmetries=p.symmetries,
        im_seed=p.im_seed,
        val_seed=p.val_seed,
        device=p.device,
        batch_size=p.batch_size,
        measures=p.measures,
        out_metrics=snakemake.output.metrics,
        reference_logits=snakemake.input.get("references"),
        out_logits=snakemake.output.get("logits"),
    ),
    gpu=gpu_request(snakemake),
)
