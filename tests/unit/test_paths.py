"""kdinv.paths: the path grammar of results/, declared once."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from kdinv.paths import (
    DISTILL,
    ID_COLUMNS,
    RUN_KINDS,
    TRAIN,
    Field,
    RunKind,
    format_number,
    parse_run_dir,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value", [1, 4.0, 0.5, 2.5, 1e-7, 3.0000001, 1 / 3, 16, 1e20, 0.1 + 0.2])
def test_a_number_is_spelled_once_and_reads_back_as_itself(value):
    text = format_number(value)
    assert float(text) == float(value)
    assert format_number(text) == text
    assert re.fullmatch(next(f for f in DISTILL.fields if f.wildcard == "temperature").regex, text)


def test_numbers_that_differ_get_different_spellings():
    assert format_number(4) == format_number(4.0) == format_number("4.0") == "4"
    assert format_number(1e-7) != format_number(0) and format_number(1e-7) != format_number(2e-7)
    assert len({format_number(1 + k * 1e-9) for k in range(5)}) == 5
    for bad in (math.nan, math.inf, "nan"):
        with pytest.raises(ValueError, match="finite"):
            format_number(bad)


def test_directory_identifiers_and_parse_agree_for_every_kind():
    train = TRAIN.directory(dataset="mnist", model="resnet", augment="translation", fold=3)
    assert train == "results/mnist/train/resnet/translation/fold3"
    distill = DISTILL.directory(dataset="jets", method="plain", teacher="t", teacher_augment="plain",
                                student="s", temperature=4.0, fold=0)
    assert distill == "results/jets/distill/t/plain/s/T4/fold0"
    recipe = DISTILL.directory(dataset="jets", method="consistency_lambda0.5_permutation", teacher="t",
                               teacher_augment="plain", student="s", temperature=4.0, fold=0)
    assert recipe == "results/jets/distill-consistency_lambda0.5_permutation/t/plain/s/T4/fold0"
    assert parse_run_dir(recipe)["recipe"] == "consistency_lambda0.5_permutation"
    for kind, path, wildcards in (
        (TRAIN, train, {"dataset": "mnist", "model": "resnet", "augment": "translation", "fold": "3"}),
        (DISTILL, distill, {"dataset": "jets", "method": "distill", "teacher": "t", "teacher_augment": "plain",
                            "student": "s", "temperature": "4", "fold": "0"}),
    ):
        ids = kind.identifiers(wildcards)
        parsed = parse_run_dir(path)
        assert list(parsed) == ID_COLUMNS
        assert {k: v for k, v in parsed.items() if not (isinstance(v, float) and math.isnan(v))} == {
            k: v for k, v in ids.items() if not (isinstance(v, float) and math.isnan(v))
        }
    assert parse_run_dir(distill)["model"] == "s" and parse_run_dir(distill)["augment"] == "plain"
    assert parse_run_dir(distill)["recipe"] == "plain" and parse_run_dir(train)["recipe"] is None
    assert parse_run_dir("/elsewhere/" + distill + "/model.pt".removesuffix("/model.pt"))["fold"] == 0
    assert TRAIN.log("train_model") == "logs/train_model/mnist/{model}/{augment}/fold{fold}.log".replace(
        "mnist", "{dataset}")
    assert DISTILL.benchmark("distill_student") == (
        "logs/benchmarks/distill_student/{dataset}/{method}/{teacher}/{teacher_augment}/{student}/T{temperature}/fold{fold}.tsv"
    )
    with pytest.raises(ValueError, match="not a run folder"):
        parse_run_dir("results/mnist/train/resnet/fold0")


def test_a_new_wildcard_is_declared_once():
    """One more Field in a kind's declaration: its folder, log path, parser and identifier columns
    all carry it, with no other change (this is how a recipe or a group would be added)."""
    extended = RunKind(
        "distill",
        DISTILL.template.replace("/T{temperature}", "/{group}/T{temperature}"),
        (*DISTILL.fields[:5], Field("group", regex=r"[a-z]+"), *DISTILL.fields[5:]),
        constants=DISTILL.constants,
    )
    path = extended.directory(dataset="d", method="plain", teacher="t", teacher_augment="plain",
                              student="s", group="cfour", temperature=2, fold=1)
    assert path == "results/d/distill/t/plain/s/cfour/T2/fold1"
    assert "{group}" in extended.log("distill_student")
    m = extended.regex().search(path)
    ids = extended.identifiers(m.groupdict())
    assert ids["group"] == "cfour" and ids["temperature"] == 2.0 and ids["model"] == "s"
    assert "group" in extended.columns
    with pytest.raises(ValueError, match="template wildcards"):
        RunKind("x", "results/{a}/{b}", (Field("a"),))


def test_no_rule_or_analysis_module_spells_a_run_folder_itself():
    """The run-folder templates live in kdinv/paths.py only: rules, curves, tables and findings
    take them from there (a second spelling is how the grammar drifted before)."""
    spelled = re.compile(r"results/\{dataset\}/(train|distill)/|\[\"kind\", \"dataset\", \"model\"")
    places = [*ROOT.glob("rules/*.smk"), ROOT / "Snakefile",
              *(ROOT / "workflow/scripts/kdinv/analysis").glob("*.py"), ROOT / "workflow/scripts/kdinv/jobs.py"]
    offenders = [str(p.relative_to(ROOT)) for p in places
                 if spelled.search("\n".join(line for line in p.read_text().splitlines()
                                              if not line.lstrip().startswith("#")))]
    assert not offenders, offenders
    assert set(RUN_KINDS) == {"train", "distill"}
