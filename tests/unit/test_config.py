"""The config schema and the cross-reference checks: every bad config is refused with its key."""

from __future__ import annotations

import copy

import pytest

from kdinv.config import (
    ConfigError,
    derive_seed,
    distillations,
    fidelity_references,
    format_temperature,
    trained_runs,
    validate_config,
)


def test_paper_and_demo_configs_are_valid(paper_config, demo_config, schema):
    validate_config(paper_config, schema)
    validate_config(demo_config, schema)
    assert demo_config["datasets"]["mnist"]["source"] == "offline"


def test_defaults_are_filled(paper_config, schema):
    del paper_config["seed"], paper_config["models"]["mlp"]["training"]["weight_decay"]
    validate_config(paper_config, schema)
    assert paper_config["seed"] == 0
    assert paper_config["models"]["mlp"]["training"]["weight_decay"] == 0.0
    assert paper_config["models"]["mlp"]["training"]["eval_batch_size"] == 4096


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
    (("seed",), -3, "seed"),
    (("threads",), 0, "threads"),
]


@pytest.mark.parametrize("path, value, expected", BAD, ids=[".".join(map(str, b[0])) + f"={b[1]!r}"[:40] for b in BAD])
def test_bad_config_is_rejected_naming_the_key(paper_config, schema, path, value, expected):
    cfg = copy.deepcopy(paper_config)
    _set(cfg, path, value)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, schema)
    assert expected in str(err.value)


def test_temperature_has_one_spelling():
    assert format_temperature(4) == format_temperature(4.0) == format_temperature("4.0") == "4"
    assert format_temperature(0.5) == "0.5"
    assert format_temperature(16) == "16"
    assert format_temperature(1.25) == "1.25"


def test_seed_depends_on_every_part_and_is_stable():
    a = derive_seed(0, "train", "mnist", "mlp", "plain", "0")
    assert a == derive_seed(0, "train", "mnist", "mlp", "plain", "0")
    assert a != derive_seed(0, "train", "mnist", "mlp", "plain", "1")
    assert a != derive_seed(1, "train", "mnist", "mlp", "plain", "0")
    assert 0 <= a < 2**31


def test_grid_of_the_mnist_row(paper_config, schema):
    validate_config(paper_config, schema)
    assert trained_runs(paper_config) == [
        ("mnist", "mlp", "plain"),
        ("mnist", "mlp", "translation"),
        ("mnist", "resnet", "plain"),
        ("mnist", "resnet-prime", "plain"),
    ]
    assert distillations(paper_config) == [
        ("mnist", "mlp", "plain", "mlp"),
        ("mnist", "mlp", "translation", "mlp"),
        ("mnist", "resnet", "plain", "mlp"),
        ("mnist", "resnet-prime", "plain", "mlp"),
    ]


def test_shared_teachers_are_trained_once(paper_config, schema):
    """Two rows with the same teachers on the same dataset (as the ModelNet rows) share trainings."""
    cfg = copy.deepcopy(paper_config)
    cfg["models"]["mlp-wide"] = copy.deepcopy(cfg["models"]["mlp"])
    cfg["rows"].append({**cfg["rows"][0], "name": "resnet-mlp-wide", "student": "mlp-wide"})
    validate_config(cfg, schema)
    runs = trained_runs(cfg)
    assert len(runs) == len(set(runs)) == 6  # resnet and resnet-prime once; two students x 2
    assert sum(r[1] == "resnet" for r in runs) == 1


def test_fidelity_references(paper_config, schema):
    validate_config(paper_config, schema)
    # s' (distilled from t') is compared with t' and with the row's teacher t
    assert fidelity_references(paper_config, "mnist", "resnet-prime", "plain", "mlp") == [
        ("resnet-prime", "plain"),
        ("resnet", "plain"),
    ]
    assert fidelity_references(paper_config, "mnist", "resnet", "plain", "mlp") == [("resnet", "plain")]
    assert fidelity_references(paper_config, "mnist", "mlp", "translation", "mlp") == [
        ("mlp", "translation")
    ]
