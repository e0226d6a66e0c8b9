import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))

from kdinv.config import (
    PLAIN,
    canonical,
    derive_seed,
    distillations,
    fidelity_references,
    im_symmetries,
    format_temperature,
    load_schema,
    trained_runs,
    validate_config,
)

validate_config(
    config, load_schema(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
)

FOLDS = list(range(config["folds"]))
TEMPERATURES = [format_temperature(t) for t in config["temperatures"]]
# Jobs that train or evaluate ask for one GPU unless the config pins them to the CPU.
GPU_PER_JOB = 0 if config["device"] == "cpu" else 1
SYMMETRY_NAMES = sorted(
    {s for d in config["datasets"].values() for s in d["symmetries"]}
)


def _names(names):
    return "|".join(sorted(names, key=len, reverse=True))


wildcard_constraints:
    dataset=_names(config["datasets"]),
    model=_names(config["models"]),
    teacher=_names(config["models"]),
    student=_names(config["models"]),
    augment=_names([PLAIN, *SYMMETRY_NAMES]),
    teacher_augment=_names([PLAIN, *SYMMETRY_NAMES]),
    fold=r"\d+",
    temperature=r"\d+(\.\d+)?",


TRAIN_DIR = "results/{dataset}/train/{model}/{augment}/fold{fold}"
TRAINED_TEST_LOGITS = f"{TRAIN_DIR}/test_logits.pt"
DISTILL_DIR = "results/{dataset}/distill/{teacher}/{teacher_augment}/{student}/T{temperature}/fold{fold}"


# Targets ------------------------------------------------------------------------------------


def trained_dirs():
    return [
        TRAIN_DIR.format(dataset=d, model=m, augment=a, fold=f)
        for d, m, a in trained_runs(config)
        for f in FOLDS
    ]


def distilled_dirs():
    return [
        DISTILL_DIR.format(
            dataset=d,
            teacher=t,
            teacher_augment=ta,
            student=s,
            temperature=T,
            fold=f,
        )
        for d, t, ta, s in distillations(config)
        for T in TEMPERATURES
        for f in FOLDS
    ]


def all_metric_tables():
    return [f"{run}/metrics.parquet" for run in trained_dirs() + distilled_dirs()]


# Per-job parameters: each is derived from the job's wildcards only, so a config edit reruns
# exactly the jobs whose parameters it changes.


def model_spec(name, block):
    """The model's architecture and the one hyperparameter block the job uses ("training" or
    "distillation"), so that editing one block reruns only the jobs that read it."""
    spec = config["models"][name]
    return canonical(
        {"arch": spec["arch"], "params": spec["params"], block: spec[block]}
    )


def symmetry_spec(dataset, name):
    if name == PLAIN:
        return None
    return canonical(config["datasets"][dataset]["symmetries"][name])


def fetch_spec(w):
    """Only the keys the chosen source uses, so that e.g. a new mirror URL does not rerun an
    offline data set and its whole downstream."""
    ds = config["datasets"][w.dataset]
    keys = {
        "download": ["url"],
        "local": ["local_dir", "verify_checksums"],
        "offline": ["offline_test_fraction"],
    }[ds["source"]]
    spec = {"source": ds["source"], **{k: ds[k] for k in keys}}
    if ds["source"] == "offline":
        spec["seed"] = derive_seed(config["seed"], "offline", w.dataset)
    return canonical(spec)


def dataset_param(key):
    return lambda w: config["datasets"][w.dataset].get(key)


def job_seed(kind):
    return lambda w: derive_seed(config["seed"], kind, *w)


def reference_logits(w):
    return {
        f"{t}/{ta}": TRAINED_TEST_LOGITS.format(
            dataset=w.dataset, model=t, augment=ta, fold=w.fold
        )
        for t, ta in fidelity_references(
            config, w.dataset, w.teacher, w.teacher_augment, w.student
        )
    }


def figure_rows():
    return [
        {
            **row,
            "labels": {
                name: config["models"][name].get("label", name)
                for name in (row["teacher"], row["teacher_prime"], row["student"])
            },
        }
        for row in config["rows"]
    ]
