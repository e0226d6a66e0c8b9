import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))

from kdinv.config import (
    canonical,
    config_warnings,
    variants_by_id,
    derive_seed,
    distillations,
    fidelity_references,
    im_symmetries,
    load_schema,
    teacher_gates,
    trained_runs,
    validate_config,
)
from kdinv.data.kinds import KINDS, dataset_url, source_spec
from kdinv.distill.recipes import variant_attributes
from kdinv.launch.gpus import machine_gpus
from kdinv.paths import (
    DISTILL,
    EVALUATION,
    NUMBER,
    PLAIN,
    TRAIN,
    format_number,
    method_of,
    recipe_of,
)

validate_config(
    config, load_schema(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
)
for warning in config_warnings(config):
    logger.warning(f"config: {warning}")

FOLDS = list(range(config["folds"]))
TEMPERATURES = [format_number(t) for t in config["temperatures"]]
ON_GPU = config["device"] != "cpu"
VARIANTS = variants_by_id(config)  # recipe variant id -> Variant ("plain": the paper's)
METHODS = [method_of(v) for v in VARIANTS]
GPU_SHARDS = config["job_resources"]["gpu_shards"]
# A local run spreads its GPU jobs over the machine's GPUs (config local_gpus; kdinv/launch/gpus.py): the
# default profile's cap of one GPU (gpu_percent=100) becomes 100 per GPU, and each job takes a GPU
# with room for its share when it starts. Not under SLURM, which gives each job its own GPU (the
# SLURM profile sets no gpu_percent cap).
LOCAL_GPUS = (
    []
    if not ON_GPU or "SLURM_JOB_ID" in os.environ
    else machine_gpus(config["local_gpus"])
)
_gpu_cap = workflow.global_resources.get("gpu_percent")
if len(LOCAL_GPUS) > 1 and _gpu_cap is not None and _gpu_cap.value == 100:
    workflow.register_resource("gpu_percent", 100 * len(LOCAL_GPUS))
    logger.info(
        f"local run on {len(LOCAL_GPUS)} GPUs ({', '.join(LOCAL_GPUS)}): gpu_percent cap "
        f"{100 * len(LOCAL_GPUS)}"
    )


def gpu_resources(jobs_per_gpu):
    """The GPU part of a training, distillation or evaluation job's resources, as three callables
    of the wildcards, for a job kind of which ``jobs_per_gpu(wildcards)`` may share one GPU:

    - gpu: whole GPUs (what the SLURM plugin turns into --gpus): 1, or 0 for a shared job on a
      cluster with shards, and 0 on a CPU-only config;
    - gres: "shard:<gpu_shards / jobs_per_gpu>" for a shared job on a cluster with shards, else "";
    - gpu_percent: 100 // jobs_per_gpu, the share of a GPU the local scheduler counts against the
      profile's cap (profiles/default: gpu_percent=100, one GPU).
    """

    def shared(w):
        return ON_GPU and GPU_SHARDS is not None and jobs_per_gpu(w) > 1

    return {
        "gpu": lambda w: 0 if not ON_GPU or shared(w) else 1,
        "gres": lambda w: f"shard:{GPU_SHARDS // jobs_per_gpu(w)}" if shared(w) else "",
        "gpu_percent": lambda w: 100 // jobs_per_gpu(w) if ON_GPU else 0,
    }


def model_jobs_per_gpu(wildcard):
    """jobs_per_gpu of the model a training (wildcard "model") or distillation ("student") trains."""
    return lambda w: config["models"][w[wildcard]]["jobs_per_gpu"]


EVALUATION_GPU = gpu_resources(lambda w: config["evaluation"]["jobs_per_gpu"])
# bf16 autocast only acts on a GPU: on a CPU-only config the param is float32, so switching
# `precision` there reruns nothing.
TRAINING_PRECISION = config["precision"] if ON_GPU else "float32"
SYMMETRY_NAMES = sorted(
    {s for d in config["datasets"].values() for s in d["symmetries"]}
)


def _names(names):
    """A wildcard regex matching exactly these names (none: a regex that matches nothing)."""
    names = sorted(names, key=len, reverse=True)
    return "|".join(names) if names else "(?!)"


def datasets_of(kind):
    """Wildcard constraint of the rules that read one kind of dataset."""
    return _names([n for n, d in config["datasets"].items() if d["kind"] == kind])


wildcard_constraints:
    dataset=_names(config["datasets"]),
    model=_names(config["models"]),
    teacher=_names(config["models"]),
    student=_names(config["models"]),
    augment=_names([PLAIN, *SYMMETRY_NAMES]),
    teacher_augment=_names([PLAIN, *SYMMETRY_NAMES]),
    fold=r"\d+",
    temperature=NUMBER,
    method=_names(METHODS),


# Run folders (kdinv/paths.py declares the templates and what each wildcard means).
TRAIN_DIR = TRAIN.template
DISTILL_DIR = DISTILL.template
# The run folder of a distillation's teacher, in the distillation's wildcards.
TEACHER_DIR = TRAIN.template.format(
    dataset="{dataset}", model="{teacher}", augment="{teacher_augment}", fold="{fold}"
)


# Targets ------------------------------------------------------------------------------------


def trained_dirs(dataset=None, fold=None):
    """Run folders of every training (of one dataset and fold, if given)."""
    return [
        TRAIN.directory(dataset=d, model=m, augment=a, fold=f)
        for d, m, a in trained_runs(config)
        if dataset in (None, d)
        for f in FOLDS
        if fold in (None, f)
    ]


def distillation_runs(dataset=None, fold=None, recipe=None, temperature=None):
    """(wildcards, run folder) of every distillation, or of one dataset, fold, recipe variant and
    temperature."""
    runs = []
    for d, t, ta, s, r in distillations(config):
        if dataset not in (None, d) or recipe not in (None, r):
            continue
        for T in TEMPERATURES:
            if temperature not in (None, T):
                continue
            for f in FOLDS:
                if fold not in (None, f):
                    continue
                w = dict(dataset=d, method=r, teacher=t, teacher_augment=ta, student=s)
                w.update(temperature=T, fold=f)
                runs.append((w, DISTILL.directory(**w)))
    return runs


def distilled_dirs():
    return [run for _, run in distillation_runs()]


def evaluation_tables():
    """Every evaluation table: the trained models of each dataset and fold, and per method and
    temperature the distilled students (kdinv/paths.py EVALUATION)."""
    tables = []
    for d in config["datasets"]:
        if not trained_dirs(d):
            continue
        for f in FOLDS:
            tables.append(EVALUATION["trained"].format(dataset=d, fold=f))
            for r in VARIANTS:
                for T in TEMPERATURES:
                    if distillation_runs(d, f, r, T):
                        tables.append(
                            EVALUATION["distilled"].format(
                                dataset=d, fold=f, method=method_of(r), temperature=T
                            )
                        )
    return tables


# Per-job parameters: each is derived from the job's wildcards only, so a config edit reruns
# exactly the jobs whose parameters it changes.


def model_spec(name, block):
    """The model's architecture and the one hyperparameter block the job uses ("training" or
    "distillation"), so that editing one block reruns only the jobs that read it."""
    spec = config["models"][name]
    out = {"arch": spec["arch"], "params": spec["params"], block: spec[block]}
    if spec.get("group_average"):
        out["group_average"] = spec["group_average"]
    return canonical(out)


def symmetry_spec(dataset, name):
    if name == PLAIN:
        return None
    return canonical(config["datasets"][dataset]["symmetries"][name])


def recipe_spec(w):
    """What the distillation job runs: the recipe variant of its method, with the transform of
    the symmetry it uses."""
    variant = VARIANTS[recipe_of(w.method)]
    sym = variant.symmetry
    return canonical(variant.spec(symmetry_spec(w.dataset, sym) if sym else None))


def distill_seed(w):
    """The job's seed: that of the paper's run for plain KD (the recipe is not part of it), so
    adding recipes changes no plain result."""
    parts = [w.dataset, w.teacher, w.teacher_augment, w.student, w.temperature, w.fold]
    if w.method != method_of(PLAIN):
        parts.append(w.method)
    return derive_seed(config["seed"], "distill", *parts)


def fetch_spec(w):
    """Only the keys the chosen source uses, so that e.g. a new mirror URL does not rerun an
    offline data set and its whole downstream."""
    ds = config["datasets"][w.dataset]
    spec = source_spec(ds)
    if ds["source"] == "download":
        spec["url"] = dataset_url(ds)
    if ds["source"] == "offline":
        spec["seed"] = derive_seed(config["seed"], "offline", w.dataset)
    return canonical(spec)


def raw_files(kind):
    """The fetch job's outputs of a dataset kind (kdinv/data/kinds.py), its prepare job's inputs."""
    return [f"resources/{{dataset}}/raw/{name}" for name in kind.raw_files]


def prepare_params(kind):
    """The prepare job's params: the kind's dataset keys and, if it draws, its seed."""
    params = {key: dataset_param(key) for key in kind.prepare_keys}
    if kind.prepare_seed is not None:
        params["seed"] = lambda w, label=kind.prepare_seed: derive_seed(
            config["seed"], label, w.dataset
        )
    return params


def fetch_retries():
    """Snakemake reruns a failed fetch job this often (each file is also retried inside it)."""
    return max(ds["retries"] for ds in config["datasets"].values()) - 1


def job_runtime(wildcards, attempt):
    """Minutes asked for a training or distillation job: the configured limit times the attempt,
    so a job stopped at its time limit is retried (profile ``retries``) with more time and
    continues from its resume state; at most ``job_resources.max_runtime`` (the partition's
    MaxTime: a job asking for more would pend forever)."""
    resources = config["job_resources"]
    return min(resources["runtime"] * attempt, resources["max_runtime"])


def job_mem_mb(wildcards, attempt):
    """Memory (MB) asked for a training, distillation or evaluation job:
    ``job_resources.mem_mb`` times ``mem_growth`` per retry, so a job that ran out of memory is
    retried with more."""
    resources = config["job_resources"]
    return math.ceil(resources["mem_mb"] * resources["mem_growth"] ** (attempt - 1))


def slurm_signal(wildcards, attempt):
    """sbatch options of a training or distillation job (``slurm_extra``, read by the SLURM
    executor plugin only): SIGTERM ``job_resources.signal_seconds`` before the time limit, at
    most a quarter of it, so the job saves its resume state and exits in time (SLURM sends it
    up to a minute earlier; without it, SIGTERM comes at the limit and SIGKILL KillWait later).
    """
    lead = min(
        config["job_resources"]["signal_seconds"],
        job_runtime(wildcards, attempt) * 60 // 4,
    )
    return f"--signal=TERM@{lead}" if lead > 0 else ""


def input_scaling(w):
    method = config["datasets"][w.dataset]["input_scaling"]
    return None if method == "none" else method


def dataset_param(key):
    return lambda w: config["datasets"][w.dataset].get(key)


def job_seed(kind):
    return lambda w: derive_seed(config["seed"], kind, *w)


def evaluated_trained(w):
    """The runs evaluate_trained evaluates: every trained model of the dataset's fold; a teacher
    that the teacher gate checks carries its symmetries (``gated``), so that its IM is the gate's
    number (docs/method.md, "The teacher gate")."""
    out = []
    for run in trained_dirs(w.dataset, int(w.fold)):
        ids = TRAIN.identifiers(run_wildcards(run))
        gated = sorted(teacher_gates(config, w.dataset, ids["model"], ids["augment"]))
        out.append({"dir": run, "identifiers": ids, "references": [], "gated": gated})
    return out


def run_wildcards(run):
    m = TRAIN.regex().search(run) or DISTILL.regex().search(run)
    return m.groupdict()


def evaluated_distilled(w):
    """The runs evaluate_distilled evaluates: every distillation of the dataset's fold by one
    method at one temperature, each against its own teacher (and s' also against the row's t).
    """
    runs = []
    recipe = recipe_of(w.method)
    for wc, run in distillation_runs(w.dataset, int(w.fold), recipe, w.temperature):
        refs = fidelity_references(
            config, wc["dataset"], wc["teacher"], wc["teacher_augment"], wc["student"]
        )
        ids = DISTILL.identifiers({**wc, "method": method_of(recipe)})
        runs.append(
            {
                "dir": run,
                "identifiers": {**ids, **variant_attributes(VARIANTS[recipe])},
                "references": [f"{t}/{ta}" for t, ta in refs],
            }
        )
    return canonical(runs)


def evaluation_runtime(runs):
    """Minutes asked for an evaluation job: one minute plus evaluation.runtime_per_run per
    model it evaluates, times the attempt (a retry after a time limit gets more), at most
    ``job_resources.max_runtime``."""
    return lambda w, attempt: min(
        math.ceil(1 + config["evaluation"]["runtime_per_run"] * len(runs(w))) * attempt,
        config["job_resources"]["max_runtime"],
    )


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


# The evaluation rules' inputs and params (one job per group of runs of a dataset's fold).
EVALUATION_INPUTS = {
    "test": "results/{dataset}/data/test.pt",
    "train": "results/{dataset}/data/train.pt",
    "fold": "results/{dataset}/folds/fold{fold}.pt",
}


def evaluation_params(runs):
    return {
        "runs": runs,
        "symmetries": lambda w: im_symmetries(config["datasets"][w.dataset]),
        "im_seed": lambda w: derive_seed(config["seed"], "im", w.dataset, w.fold),
        "val_seed": lambda w: derive_seed(config["seed"], "im-val", w.dataset, w.fold),
        "device": config["device"],
        "batch_size": config["evaluation"]["batch_size"],
        "measures": lambda w: {
            "input_kind": KINDS[config["datasets"][w.dataset]["kind"]].data,
            "samples": config["evaluation"]["measure_samples"],
            "seed": derive_seed(config["seed"], "measures", w.dataset, w.fold),
        },
    }
