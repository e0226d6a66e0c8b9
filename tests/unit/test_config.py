"""The config schema and the cross-reference checks: every bad config is refused with its key."""

from __future__ import annotations

import copy

import pytest
from bad_configs import BAD, apply_change

from kdinv.config import (
    ConfigError,
    derive_seed,
    distillations,
    fidelity_references,
    trained_runs,
    validate_config,
)
from kdinv.paths import format_number as format_temperature


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


@pytest.mark.parametrize("path, value, expected", BAD, ids=[".".join(map(str, b[0])) + f"={b[1]!r}"[:40] for b in BAD])
def test_bad_config_is_rejected_naming_the_key(paper_config, schema, path, value, expected):
    cfg = apply_change(paper_config, path, value)
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


def test_grid_of_the_paper_rows(paper_config, schema):
    validate_config(paper_config, schema)
    runs = trained_runs(paper_config)
    assert [r for r in runs if r[0] == "mnist"] == [
        ("mnist", "mlp", "plain"),
        ("mnist", "mlp", "translation"),
        ("mnist", "resnet", "plain"),
        ("mnist", "resnet-prime", "plain"),
    ]
    assert [d for d in distillations(paper_config) if d[0] == "mnist"] == [
        ("mnist", "mlp", "plain", "mlp", "plain"),
        ("mnist", "mlp", "translation", "mlp", "plain"),
        ("mnist", "resnet", "plain", "mlp", "plain"),
        ("mnist", "resnet-prime", "plain", "mlp", "plain"),
    ]
    # the two ModelNet40 rows share DGN and DGN': 2 students x 2 + 2 teachers
    assert sorted(r[1:] for r in runs if r[0] == "modelnet40") == [
        ("deepsets-equiv", "plain"), ("deepsets-equiv", "translation"),
        ("deepsets-inv", "plain"), ("deepsets-inv", "translation"),
        ("dgcnn", "plain"), ("dgcnn-prime", "plain"),
    ]
    assert sorted(r[1:] for r in runs if r[0] == "jets") == [
        ("jet-deepsets", "plain"), ("jet-deepsets-prime", "plain"),
        ("jet-mlp", "permutation"), ("jet-mlp", "plain"),
    ]
    assert len(runs) == len(set(runs)) == 14
    assert len(distillations(paper_config)) == 16


def test_shared_teachers_are_trained_once(paper_config, schema):
    """Two rows with the same teachers on the same dataset (as the ModelNet rows) share trainings."""
    cfg = copy.deepcopy(paper_config)
    cfg["models"]["mlp-wide"] = copy.deepcopy(cfg["models"]["mlp"])
    mnist_row = next(row for row in cfg["rows"] if row["dataset"] == "mnist")
    cfg["rows"] = [mnist_row, {**mnist_row, "name": "resnet-mlp-wide", "student": "mlp-wide"}]
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


def test_a_student_that_is_already_invariant_gets_a_warning(paper_config, schema):
    from kdinv.config import config_warnings

    assert config_warnings(validate_config(copy.deepcopy(paper_config), schema)) == []
    cfg = copy.deepcopy(paper_config)
    cfg["rows"][0]["student"] = "dgcnn-prime"  # translation-invariant, like the teacher
    cfg["models"]["dgcnn-prime"]["distillation"] = cfg["models"]["deepsets-inv"]["distillation"]
    warnings = config_warnings(validate_config(cfg, schema))
    assert len(warnings) == 1 and warnings[0].startswith("rows[0].student: model 'dgcnn-prime' is already invariant")


def test_a_non_invariant_teacher_runs_only_when_the_row_allows_it(paper_config, schema):
    from kdinv.config import config_warnings

    cfg = copy.deepcopy(paper_config)
    cfg["rows"][3]["teacher"] = "mlp"
    with pytest.raises(ConfigError, match=r"rows\[3\]\.teacher: model 'mlp' is not invariant to shift_2d"):
        validate_config(copy.deepcopy(cfg), schema)
    cfg["rows"][3]["allow_non_invariant_teachers"] = True
    warnings = config_warnings(validate_config(cfg, schema))
    assert any(w.startswith("rows[3].teacher: model 'mlp' is not invariant") for w in warnings)


def test_the_memory_check_uses_the_configured_sizes(paper_config, schema):
    from kdinv.config import split_mb

    cfg = validate_config(copy.deepcopy(paper_config), schema)
    assert split_mb(cfg["datasets"]["modelnet40"]) == pytest.approx(9843 * 3000 * 4 / 2**20)
    assert split_mb(cfg["datasets"]["mnist"]) == pytest.approx(60000 * 32 * 32 * 4 / 2**20)
    cfg = copy.deepcopy(paper_config)
    cfg["job_resources"]["mem_mb"] = 500  # MNIST's 234 MiB split, three copies: too much
    with pytest.raises(ConfigError, match=r"datasets\.mnist\.pad_to: the training split would take about 234 MB"):
        validate_config(cfg, schema)


def test_the_run_settings_record_the_sources_the_versions_and_the_config(demo_config, tmp_path):
    """results/run_settings.yaml: each dataset's source, the installed versions (torch's own),
    "not installed" for a package that is not, and the config as given, in a YAML file."""
    import platform

    import torch
    import yaml

    from kdinv.config import run_settings, write_run_settings

    torch_version = torch.__version__.split("+")[0]  # the distribution's version, without the build
    settings = run_settings(demo_config, packages=("torch", "no-such-package-kdinv"))
    assert settings["packages"] == {"torch": torch_version, "no-such-package-kdinv": "not installed"}
    assert settings["data_sources"] == {name: ds["source"] for name, ds in demo_config["datasets"].items()}
    assert settings["python"] == platform.python_version()
    out = tmp_path / "run_settings.yaml"
    write_run_settings(demo_config, out)
    written = yaml.safe_load(out.read_text())
    assert list(written) == ["data_sources", "python", "platform", "packages", "config"]
    assert written["config"] == demo_config and written["packages"]["torch"] == torch_version
    assert not list(tmp_path.glob("*.tmp"))
