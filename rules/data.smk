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
    params:
        source=dataset_param("source"),
        url=dataset_param("url"),
        retries=dataset_param("retries"),
        local_dir=dataset_param("local_dir"),
        verify=dataset_param("verify_checksums"),
        test_fraction=dataset_param("offline_test_fraction"),
        seed=lambda w: derive_seed(config["seed"], "offline", w.dataset),
    log:
        "logs/fetch_mnist/{dataset}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/fetch_mnist.py"


rule prepare_mnist:
    input:
        rules.fetch_mnist.output,
    output:
        train="results/{dataset}/data/train.pt",
        test="results/{dataset}/data/test.pt",
    params:
        pad_to=dataset_param("pad_to"),
    log:
        "logs/prepare_mnist/{dataset}.log",
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/prepare_mnist.py"


rule make_folds:
    input:
        train="results/{dataset}/data/train.pt",
    output:
        expand("results/{{dataset}}/folds/fold{fold}.pt", fold=FOLDS),
    params:
        k=config["folds"],
        seed=lambda w: derive_seed(config["seed"], "folds", w.dataset),
    log:
        "logs/make_folds/{dataset}.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/make_folds.py"
