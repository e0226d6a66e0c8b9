rule evaluate_trained:
    input:
        model=f"{TRAIN_DIR}/model.pt",
        test="results/{dataset}/data/test.pt",
    output:
        metrics=f"{TRAIN_DIR}/metrics.parquet",
        logits=f"{TRAIN_DIR}/test_logits.pt",
    log:
        TRAIN.log("evaluate_trained"),
    benchmark:
        TRAIN.benchmark("evaluate_trained")
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        **EVALUATION_GPU,
        mem_mb=config["job_resources"]["mem_mb"],
        runtime=30,
    params:
        symmetries=lambda w: im_symmetries(config["datasets"][w.dataset]),
        im_seed=lambda w: derive_seed(config["seed"], "im", w.dataset, w.fold),
        identifiers=lambda w: TRAIN.identifiers(w),
        device=config["device"],
        batch_size=config["evaluation"]["batch_size"],
    script:
        "../workflow/scripts/evaluate_model.py"


rule evaluate_distilled:
    input:
        model=f"{DISTILL_DIR}/model.pt",
        references=lambda w: list(reference_logits(w).values()),
        test="results/{dataset}/data/test.pt",
    output:
        metrics=f"{DISTILL_DIR}/metrics.parquet",
        logits=f"{DISTILL_DIR}/test_logits.pt",
    log:
        DISTILL.log("evaluate_distilled"),
    benchmark:
        DISTILL.benchmark("evaluate_distilled")
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        **EVALUATION_GPU,
        mem_mb=config["job_resources"]["mem_mb"],
        runtime=30,
    params:
        symmetries=lambda w: im_symmetries(config["datasets"][w.dataset]),
        im_seed=lambda w: derive_seed(config["seed"], "im", w.dataset, w.fold),
        identifiers=lambda w: DISTILL.identifiers(w),
        references=lambda w: list(reference_logits(w)),
        device=config["device"],
        batch_size=config["evaluation"]["batch_size"],
    script:
        "../workflow/scripts/evaluate_model.py"
