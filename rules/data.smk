# Each kind of dataset has a fetch rule (download, local copy or offline generation; run on the
# submitting host, since compute nodes often have no internet) and a prepare rule that writes the
# common split format: results/{dataset}/data/{train,test}.pt. Folds are kind-independent.

MNIST_RAW = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


localrules:
    fetch_mnist,
    fetch_modelnet40,
    fetch_jets,


rule fetch_mnist:
    output:
        expand("resources/{{dataset}}/raw/{name}", name=MNIST_RAW),
    log:
        "logs/fetch_mnist/{dataset}.log",
    wildcard_constraints:
        dataset=datasets_of("mnist"),
    # Each file is retried inside the job; the whole job is rerun this often on top.
    retries: fetch_retries()
    conda:
        "../envs/torch.yaml"
    threads: 1
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
    wildcard_constraints:
        dataset=datasets_of("mnist"),
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        pad_to=dataset_param("pad_to"),
    script:
        "../workflow/scripts/prepare_mnist.py"


# The 2 GB zip is not a declared output: a download cut short keeps its partial file for the
# next attempt, which Snakemake would delete. source.json names what the prepare rule reads (the
# zip, the local tree or zip, or the generated tree).
rule fetch_modelnet40:
    output:
        "resources/{dataset}/raw/source.json",
    log:
        "logs/fetch_modelnet40/{dataset}.log",
    wildcard_constraints:
        dataset=datasets_of("modelnet40"),
    retries: fetch_retries()
    conda:
        "../envs/torch.yaml"
    threads: 1
    params:
        spec=fetch_spec,
    script:
        "../workflow/scripts/fetch_modelnet40.py"


rule prepare_modelnet40:
    input:
        "resources/{dataset}/raw/source.json",
    output:
        train="results/{dataset}/data/train.pt",
        test="results/{dataset}/data/test.pt",
    log:
        "logs/prepare_modelnet40/{dataset}.log",
    wildcard_constraints:
        dataset=datasets_of("modelnet40"),
    conda:
        "../envs/torch.yaml"
    # Meshes are read and sampled in parallel; Snakemake lowers this to the cores it has.
    threads: 8
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        num_points=dataset_param("num_points"),
        seed=lambda w: derive_seed(config["seed"], "sample-points", w.dataset),
    script:
        "../workflow/scripts/prepare_modelnet40.py"


# As for ModelNet40: the archives and the extracted h5 files are not declared outputs.
rule fetch_jets:
    output:
        "resources/{dataset}/raw/source.json",
    log:
        "logs/fetch_jets/{dataset}.log",
    wildcard_constraints:
        dataset=datasets_of("jets"),
    retries: fetch_retries()
    conda:
        "../envs/torch.yaml"
    threads: 1
    params:
        spec=fetch_spec,
    script:
        "../workflow/scripts/fetch_jets.py"


rule prepare_jets:
    input:
        "resources/{dataset}/raw/source.json",
    output:
        train="results/{dataset}/data/train.pt",
        test="results/{dataset}/data/test.pt",
    log:
        "logs/prepare_jets/{dataset}.log",
    wildcard_constraints:
        dataset=datasets_of("jets"),
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        n_constituents=dataset_param("n_constituents"),
        pt_min=dataset_param("pt_min"),
    script:
        "../workflow/scripts/prepare_jets.py"


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
