"""Rule train_model: one supervised training (model, plain or augmented data, fold)."""

from kdinv.launch.start import gpu_request, run_job

p = snakemake.params
run_job(
    "kdinv.jobs:train_model",
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
    ),
    gpu=gpu_request(snakemake),
)
