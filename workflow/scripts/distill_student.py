"""Rule distill_student: one distillation (teacher, student, temperature, fold)."""

from kdinv.jobs import distill_student
from kdinv.runtime import asked_for_gpu, require_visible_gpu, start_job

log = start_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
require_visible_gpu(
    p.device, asked_for_gpu(snakemake.resources),
    f"{snakemake.rule} " + " ".join(f"{k}={v}" for k, v in snakemake.wildcards.items()),
)
log.info("seed %d, T %g, kd_direction %s", p.seed, p.temperature, p.direction)
distill_student(
    train_split=snakemake.input.train,
    fold_file=snakemake.input.fold,
    teacher_logits=snakemake.input.teacher_logits,
    student_spec=p.spec,
    temperature=p.temperature,
    direction=p.direction,
    seed=p.seed,
    device=p.device,
    precision=p.precision,
    out_model=snakemake.output.model,
    wildcards=dict(snakemake.wildcards.items()),
    # read from the config, not tracked params: how often the resume state is saved cannot change
    # a result, so editing them reruns nothing
    resume_every=snakemake.config["resume_every"],
    resume_minutes=snakemake.config["resume_minutes"],
)
