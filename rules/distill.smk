rule distill_student:
    input:
        train="results/{dataset}/data/train.pt",
        fold="results/{dataset}/folds/fold{fold}.pt",
        teacher_logits="results/{dataset}/train/{teacher}/{teacher_augment}/fold{fold}/train_logits.pt",
    output:
        model=f"{DISTILL_DIR}/model.pt",
    log:
        "logs/distill_student/{dataset}/{teacher}/{teacher_augment}/{student}/T{temperature}/fold{fold}.log",
    benchmark:
        "benchmarks/distill_student/{dataset}/{teacher}/{teacher_augment}/{student}/T{temperature}/fold{fold}.tsv"
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
        direction=config["kd_direction"],
        seed=job_seed("distill"),
        device=config["device"],
        precision=TRAINING_PRECISION,
    script:
        "../workflow/scripts/distill_student.py"
