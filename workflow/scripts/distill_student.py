"""Rule distill_student: one distillation (teacher, student, recipe variant, temperature, fold)."""

from kdinv.config import derive_seed, teacher_gates
from kdinv.launch.start import gpu_request, run_job

p, w, config = snakemake.params, snakemake.wildcards, snakemake.config
run_job(
    "kdinv.jobs:distill_student",
    snakemake.log[0],
    snakemake.threads,
    dict(
        train_split=snakemake.input.train,
        fold_file=snakemake.input.fold,
        teacher_logits=snakemake.input.teacher_logits,
        teacher_model=snakemake.input.teacher_model,
        test_split=snakemake.input.test,
        student_spec=p.spec,
        temperature=p.temperature,
        recipe=p.recipe,
        seed=p.seed,
        device=p.device,
        precision=p.precision,
        out_model=snakemake.output.model,
        wildcards=dict(w.items()),
        # read from the config, not tracked params: the teacher gate and how often the resume
        # state is saved cannot change a result, so editing them reruns nothing
        gates=teacher_gates(config, w.dataset, w.teacher, w.teacher_augment),
        gate_seed=derive_seed(config["seed"], "im", w.dataset, w.fold),
        resume_every=config["resume_every"],
        resume_minutes=config["resume_minutes"],
    ),
    gpu=gpu_request(snakemake),
)
