"""Rule train_model: one supervised training (model, plain or augmented data, fold)."""

from kdinv.runtime import run_job

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
        # read from the config, not a tracked param: how often the resume state is saved cannot
        # change a result, so editing it reruns nothing
        resume_every=snakemake.config["resume_every"],
    ),
)
