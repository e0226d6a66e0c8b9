MNIST_RAW = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


# Compute nodes of clusters often have no internet: fetching runs on the submitting host.
localrules:
    fetch_mnist,


rule fetch_mnist:
    output:
        expand("resources/{{dataset}}/raw/{name}", name=MNIST_RAW),
    log:
        "logs/fetch_mnist/{dataset}.log",
    # Each file is retried inside the job; the whole job is rerun this often on top.
    retries: max(ds["retries"] for ds in config["datasets"].values()) - 1
    conda:
        "../envs/torch.yaml"
    params:
        spec=fetch_spec,
    script:
        "../workflow/scripts/fetch_mnist.py"


rule prepare_mnist:
    input:
        rules.fetch_mnist.output,
    output:
        train="results/{dataset}/data/train.pt",
        test="results/{dataset}/data/test.pt",
    log:
        "logs/prepare_mnist/{dataset}.log",
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        pad_to=dataset_param("pad_to"),
    script:
        "../workflow/scripts/prepare_mnist.py"


rule make_folds:
    input:
        train="results/{dataset}/data/train.pt",
    output:
        expand("results/{{dataset}}/folds/fold{fold}.pt", fold=FOLDS),
    log:
        "logs/make_folds/{dataset}.log",
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        k=config["folds"],
        seed=lambda w: derive_seed(config["seed"], "folds", w.dataset),
    script:
        "../workflow/scripts/make_folds.py"
