"""Invalid configs, each a change to the paper's config.yaml and a text its error must contain.

Shared by the library test of the validation (tests/unit/test_config.py) and the workflow test
that Snakemake refuses each before any job (tests/workflow/test_workflow.py).
"""

from __future__ import annotations

import copy


def _set(cfg, path, value):
    *parents, last = path
    node = cfg
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

# (what is changed, the value, a text the error must contain)
BAD = [
    (("tempratures",), [1, 4], "tempratures"),
    (("temperatures",), [1, -4], "temperatures[1]"),
    (("temperatures",), [0, 4], "temperatures[0]"),
    (("temperatures",), [1, 4, 4.0], "temperatures: duplicate values ['4']"),
    (("temperatures",), [], "temperatures"),
    (("temperatures",), "4", "temperatures"),
    (("folds",), 1, "folds"),
    (("folds",), "five", "folds"),
    (("kd_direction",), "backward", "kd_direction"),
    (("device",), "tpu", "device"),
    (("rows",), [], "rows"),
    (("rows", 0, "teacher"), "resnett", "rows[0].teacher: 'resnett' is not a configured model"),
    (("rows", 0, "student"), "cnn", "rows[0].student"),
    (("rows", 0, "dataset"), "mnist2", "rows[0].dataset"),
    (("rows", 0, "symmetry"), "rotation", "rows[0].symmetry"),
    (("rows", 0, "teacher_prime"), _DELETE, "teacher_prime"),
    (("rows", 0, "colour"), "red", "rows[0]"),
    (("models", "mlp", "arch"), "transformer", "models.mlp.arch"),
    (("models", "mlp", "params", "hidden"), [2048, 0], "models.mlp.params.hidden[1]"),
    (("models", "mlp", "params", "depth"), 4, "models.mlp.params"),
    (("models", "resnet", "params", "width"), 0, "models.resnet.params.width"),
    (("models", "mlp", "training", "lr"), 0, "models.mlp.training.lr"),
    (("models", "mlp", "training", "epochs"), 2.5, "models.mlp.training.epochs"),
    (("models", "mlp", "training", "batchsize"), 64, "models.mlp.training"),
    (("models", "mlp", "distillation"), _DELETE, "models.mlp.distillation: required"),
    (("models", "Bad_Name"), {"arch": "mlp", "params": {"hidden": [1]}, "training": {}}, "models"),
    (("datasets", "mnist", "source"), "ftp", "datasets.mnist.source"),
    (("datasets", "mnist", "kind"), "cifar", "datasets.mnist.kind"),
    (("datasets", "mnist", "pad_to"), 20, "datasets.mnist.pad_to"),
    (("datasets", "mnist", "url"), "ossci-datasets/mnist", "datasets.mnist.url"),
    (("datasets", "mnist", "source"), "local", "datasets.mnist.local_dir: required"),
    (("datasets", "mnist", "symmetries", "translation", "max_shift"), -1, "max_shift"),
    (("datasets", "mnist", "symmetries", "plain"), {"transform": "shift_2d"}, "symmetries"),
    (("datasets", "modelnet40", "pad_to"), 32, "datasets.modelnet40.pad_to: only read for kind 'mnist'"),
    (("datasets", "jets", "num_points"), 100, "datasets.jets.num_points: only read for kind 'modelnet40'"),
    (("datasets", "jets", "input_scaling"), "zscore", "datasets.jets.input_scaling"),
    (("datasets", "modelnet40", "num_points"), 1, "datasets.modelnet40.num_points"),
    (("datasets", "modelnet40", "symmetries", "translation", "max_shift"), 5, "max_shift"),
    (("datasets", "modelnet40", "symmetries", "translation", "scale"), -0.1, "scale"),
    (("datasets", "jets", "symmetries", "permutation", "transform"), "rotate", "transform"),
    (("models", "dgcnn", "params", "knn"), 20, "models.dgcnn.params"),
    (("models", "dgcnn", "params", "edge_layers"), [[64], []], "models.dgcnn.params.edge_layers[1]"),
    (("models", "deepsets-inv", "params", "activation"), "gelu", "models.deepsets-inv.params.activation"),
    (("models", "deepsets-inv", "params", "phi"), _DELETE, "phi"),
    (("models", "deepsets-inv", "training", "grad_clip"), -5, "models.deepsets-inv.training.grad_clip"),
    (("seed",), -3, "seed"),
    (("threads",), 0, "threads"),
    (("resume_every",), 0, "resume_every"),
    (("resume_minutes",), -1, "resume_minutes"),
    (("job_resources", "max_runtime"), 120, "job_resources.max_runtime: 120 minutes is less than"),
    (("job_resources", "mem_growth"), 0.5, "job_resources.mem_growth"),
    (("job_resources", "signal_seconds"), -30, "job_resources.signal_seconds"),
    (("job_resources", "stuck_minutes"), -5, "job_resources.stuck_minutes"),
    (("precision",), "fp16", "precision"),
    (("job_resources", "gpu_shards"), 1, "models.mlp.jobs_per_gpu"),
    (("models", "mlp", "jobs_per_gpu"), 0, "jobs_per_gpu"),
    # sizes that would exhaust the machine, numbers that are not numbers
    (("folds",), 100000, "folds"),
    (("temperatures",), [float("nan"), 4], "temperatures[0]: nan is not a finite number"),
    (("temperatures",), [float("inf"), 4], "temperatures[0]: inf is not a finite number"),
    (("models", "mlp", "training", "lr"), float("nan"), "models.mlp.training.lr: nan is not a finite number"),
    (("datasets", "modelnet40", "num_points"), 100000000000, "datasets.modelnet40.num_points"),
    (("datasets", "modelnet40", "num_points"), 60000, "datasets.modelnet40.num_points: the training split would take"),
    (("datasets", "mnist", "offline_test_fraction"), float("nan"), "datasets.mnist.offline_test_fraction"),
    # rows whose models cannot read the data, or whose teacher lacks the row's symmetry
    (("rows", 3, "teacher"), "dgcnn", "rows[3].teacher: model 'dgcnn' (arch dgcnn) reads point_cloud"),
    (("rows", 3, "teacher"), "mlp", "rows[3].teacher: model 'mlp' is not invariant to shift_2d"),
    (("rows", 3, "teacher_prime"), "mlp", "rows[3].teacher_prime: model 'mlp' is not invariant"),
    (("datasets", "mnist", "pad_to"), 28, "rows[3].teacher: model 'resnet' is not invariant to shift_2d"),
    (("datasets", "jets", "symmetries", "permutation", "transform"), "shift_2d",
     "datasets.jets.symmetries.permutation.transform: shift_2d acts on image"),
    # distillation recipes
    (("recipes",), {"dropout": {}}, "recipes"),
    (("recipes",), {"consistency": {"lambda": [1.0, -0.5]}}, "recipes.consistency.lambda"),
    (("recipes",), {"consistency": {"lambda": -1}}, "recipes.consistency.lambda"),
    (("recipes",), {"consistency": {}}, "recipes.consistency"),
    (("recipes",), {"consistency": {"lambda": [1, 1.0]}}, "recipes.consistency.lambda: [1, 1.0] repeats a value"),
    (("recipes",), {"plain": {"direction": "sideways"}}, "recipes.plain.direction"),
    (("recipes",), {"augmented": {"symmetry": "rotation"}},
     "recipes.augmented.symmetry: 'rotation' is not a symmetry of dataset"),
    (("recipes",), {"mixup": {"alpha": 0}}, "recipes.mixup.alpha"),
    # group averaging
    (("models", "resnet", "group_average"), "translate_3d", "models.resnet.group_average"),
    (("models", "dgcnn", "group_average"), "rot90_2d", "models.dgcnn.group_average: rot90_2d acts on image"),
]


def apply_change(config: dict, path: tuple, value) -> dict:
    """A copy of ``config`` with ``path`` set to ``value`` (or deleted for _DELETE)."""
    cfg = copy.deepcopy(config)
    _set(cfg, path, value)
    return cfg
