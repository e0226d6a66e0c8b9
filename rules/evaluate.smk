# One evaluation job per group of runs that a config edit adds or removes together: the trained
# models of a dataset's fold, and the distillations of one method (recipe variant) at one
# temperature. Adding a temperature or a recipe adds evaluation jobs and reruns none.


rule evaluate_trained:
    input:
        **EVALUATION_INPUTS,
        models=lambda w: [f"{r['dir']}/model.pt" for r in evaluated_trained(w)],
    output:
        metrics=EVALUATION["trained"],
        logits=EVALUATION["trained_logits"],
    log:
        "logs/evaluate_trained/{dataset}/fold{fold}.log",
    benchmark:
        "logs/benchmarks/evaluate_trained/{dataset}/fold{fold}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        **EVALUATION_GPU,
        mem_mb=job_mem_mb,
        runtime=evaluation_runtime(evaluated_trained),
    params:
        **evaluation_params(evaluated_trained),
    script:
        "../workflow/scripts/evaluate_models.py"


rule evaluate_distilled:
    input:
        **EVALUATION_INPUTS,
        models=lambda w: [f"{r['dir']}/model.pt" for r in evaluated_distilled(w)],
        references=EVALUATION["trained_logits"],
    output:
        metrics=EVALUATION["distilled"],
    log:
        "logs/evaluate_distilled/{dataset}/fold{fold}/{method}-T{temperature}.log",
    benchmark:
        "logs/benchmarks/evaluate_distilled/{dataset}/fold{fold}/{method}-T{temperature}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        **EVALUATION_GPU,
        mem_mb=job_mem_mb,
        runtime=evaluation_runtime(evaluated_distilled),
    params:
        **evaluation_params(evaluated_distilled),
    script:
        "../workflow/scripts/evaluate_models.py"
