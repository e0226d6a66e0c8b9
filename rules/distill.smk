rule distill_student:
    input:
        train="results/{dataset}/data/train.pt",
        fold="results/{dataset}/folds/fold{fold}.pt",
        teacher_logits=f"{TEACHER_DIR}/train_logits.pt",
        # the teacher itself: the gate checks its invariance, some recipes run it per batch
        teacher_model=f"{TEACHER_DIR}/model.pt",
        test="results/{dataset}/data/test.pt",
    output:
        model=f"{DISTILL_DIR}/model.pt",
    log:
        DISTILL.log("distill_student"),
    benchmark:
        DISTILL.benchmark("distill_student")
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        **gpu_resources(model_jobs_per_gpu("student")),
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        slurm_extra=slurm_signal,
    params:
        spec=lambda w: model_spec(w.student, "distillation"),
        temperature=lambda w: float(w.temperature),
        recipe=recipe_spec,
        seed=distill_seed,
        device=config["device"],
        precision=TRAINING_PRECISION,
    script:
        "../workflow/scripts/distill_student.py"
