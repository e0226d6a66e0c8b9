"""Rule train_model: one supervised training (model, plain or augmented data, fold)."""

from kdinv.runtime import asked_for_gpu, job_label, run_job

p = snakemake.params
run_job(
    "kdinv.entrypoints:train_model",
    snakemake.log[0],
    snakemake.threads,
    dict(
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
        # read from the config, not tracked params: how often the resume state is saved cannot
        # change a result, so editing them reruns nothing
        resume_every=snakemake.config["resume_every"],
        resume_minutes=snakemake.config["resume_minutes"],
        gpu_check=dict(asked=asked_for_gpu(snakemake.resources), job=job_label(snakemake)),
        gpu_placement=dict(percent=snakemake.resources.get("gpu_percent", 0),
                           local_gpus=snakemake.config["local_gpus"]),
    ),
)
