rule train_model:
    input:
        train="results/{dataset}/data/train.pt",
        fold="results/{dataset}/folds/fold{fold}.pt",
    output:
        model=f"{TRAIN_DIR}/model.pt",
        logits=f"{TRAIN_DIR}/train_logits.pt",
    log:
        TRAIN.log("train_model"),
    benchmark:
        TRAIN.benchmark("train_model")
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        **gpu_resources(model_jobs_per_gpu("model")),
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        slurm_extra=slurm_signal,
    params:
        spec=lambda w: model_spec(w.model, "training"),
        symmetry=lambda w: symmetry_spec(w.dataset, w.augment),
        seed=job_seed("train"),
        device=config["device"],
        precision=TRAINING_PRECISION,
    script:
        "../workflow/scripts/train_model.py"
