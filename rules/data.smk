# Each kind of dataset (kdinv/data/kinds.py, KINDS) has a fetch rule, fetch_<kind> (download,
# local copy or offline generation; run on the submitting host, since compute nodes often have no
# internet), and a prepare rule, prepare_<kind>, that writes the common split format:
# results/{dataset}/data/{train,test}.pt. Both are made here from the kind's description, with
# one script each for every kind. Folds are kind-independent.


for _kind in KINDS.values():

    rule:
        name:
            f"fetch_{_kind.name}"
        output:
            raw_files(_kind),
        log:
            f"logs/fetch_{_kind.name}/{{dataset}}.log",
        wildcard_constraints:
            dataset=datasets_of(_kind.name),
        # Each file is retried inside the job; the whole job is rerun this often on top.
        retries: fetch_retries()
        localrule: True
        conda:
            "../envs/torch.yaml"
        threads: 1
        params:
            spec=fetch_spec,
        script:
            "../workflow/scripts/fetch_dataset.py"

    rule:
        name:
            f"prepare_{_kind.name}"
        input:
            raw_files(_kind),
        output:
            train="results/{dataset}/data/train.pt",
            test="results/{dataset}/data/test.pt",
        log:
            f"logs/prepare_{_kind.name}/{{dataset}}.log",
        wildcard_constraints:
            dataset=datasets_of(_kind.name),
        conda:
            "../envs/torch.yaml"
        threads: _kind.prepare_threads
        resources:
            mem_mb=_kind.prepare_mem_mb,
            runtime=_kind.prepare_runtime,
        params:
            **prepare_params(_kind),
        script:
            "../workflow/scripts/prepare_dataset.py"


rule make_folds:
    input:
        train="results/{dataset}/data/train.pt",
    output:
        expand("results/{{dataset}}/folds/fold{fold}.pt", fold=FOLDS),
    log:
        "logs/make_folds/{dataset}.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        k=config["folds"],
        seed=lambda w: derive_seed(config["seed"], "folds", w.dataset),
        scaling=input_scaling,
    script:
        "../workflow/scripts/make_folds.py"
