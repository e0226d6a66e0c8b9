"""The schema's enums and the library's registries name the same things, so adding an
architecture, a transform, a dataset kind or a loss option to one without the other fails here
instead of in the first job that meets it."""

from __future__ import annotations

import inspect

from kdinv.config import AUGMENT_KEYS
from kdinv.data.kinds import KINDS, SHARED_KEYS, SOURCES
from kdinv.data.scaling import METHODS
from kdinv.distill.losses import KD_DIRECTIONS
from kdinv.models import ARCHITECTURES
from kdinv.symmetry.transforms import TRANSFORMS
from kdinv.training import PRECISIONS


def _arch_branches(schema):
    """arch -> the params schema of its if/then branch."""
    out = {}
    for branch in schema["properties"]["models"]["additionalProperties"]["allOf"]:
        arch = branch["if"]["properties"]["arch"]["const"]
        out[arch] = branch["then"]["properties"]["params"]
    return out


def _transform_branches(symmetry_schema):
    out = {}
    for branch in symmetry_schema["allOf"]:
        name = branch["if"]["properties"]["transform"]["const"]
        out[name] = set(branch["then"]["propertyNames"]["enum"])
    return out


def _symmetry_schema(schema):
    dataset = schema["properties"]["datasets"]["additionalProperties"]
    return dataset["properties"]["symmetries"]["additionalProperties"]


def test_architectures_match_the_schema(schema):
    model = schema["properties"]["models"]["additionalProperties"]
    assert set(model["properties"]["arch"]["enum"]) == set(ARCHITECTURES)
    branches = _arch_branches(schema)
    assert set(branches) == set(ARCHITECTURES)
    for arch, factory in ARCHITECTURES.items():
        keyword = {p.name for p in inspect.signature(factory).parameters.values()
                   if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert set(branches[arch]["properties"]) == keyword, arch
        required = {p.name for p in inspect.signature(factory).parameters.values()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty}
        assert set(branches[arch].get("required", [])) == required, arch


def test_transforms_match_the_schema(schema):
    sym = _symmetry_schema(schema)
    assert set(sym["properties"]["transform"]["enum"]) == set(TRANSFORMS)
    branches = _transform_branches(sym)
    assert set(branches) == set(TRANSFORMS)
    for name, fn in TRANSFORMS.items():
        params = [p.name for p in inspect.signature(fn).parameters.values()][2:]  # after (x, generator)
        assert branches[name] == {"transform", *params, *AUGMENT_KEYS}, name


def test_dataset_kinds_and_options_match_the_schema(schema):
    dataset = schema["properties"]["datasets"]["additionalProperties"]["properties"]
    assert set(dataset["kind"]["enum"]) == set(KINDS)
    assert tuple(dataset["source"]["enum"]) == SOURCES
    for kind in KINDS.values():  # every key a kind reads is a dataset key of the schema
        assert {*kind.own_keys, *SHARED_KEYS} <= set(dataset), kind.name
    assert set(dataset["input_scaling"]["enum"]) == {"none", *METHODS}
    assert set(schema["properties"]["kd_direction"]["enum"]) == set(KD_DIRECTIONS)
    assert set(schema["properties"]["precision"]["enum"]) == set(PRECISIONS)


def test_torch_free_catalogs_name_the_same_things():
    """config validation reads what architectures and transforms can do from torch-free catalogs;
    they must list exactly the registered ones."""
    from kdinv.models.capabilities import ARCH_INPUTS, structural_invariances
    from kdinv.symmetry.catalog import INPUT_KINDS, TRANSFORM_INFO

    assert set(ARCH_INPUTS) == set(ARCHITECTURES)
    assert set(TRANSFORM_INFO) == set(TRANSFORMS)
    for arch, kinds in ARCH_INPUTS.items():
        assert kinds <= set(INPUT_KINDS), arch
        assert structural_invariances(arch, 32) <= set(TRANSFORMS), arch
    for name, info in TRANSFORM_INFO.items():
        assert info.acts_on <= set(INPUT_KINDS), name


def test_recipes_match_the_schema(schema):
    from kdinv.distill.recipes import RECIPES

    recipes = schema["properties"]["recipes"]["properties"]
    assert set(recipes) == set(RECIPES)
    for name, entry in recipes.items():
        recipe = RECIPES[name]
        expected = {"direction", *recipe.param_keys, *(("symmetry",) if recipe.needs_symmetry else ())}
        assert set(entry["properties"]) == expected, name
        assert set(entry.get("required", ())) == set(recipe.param_keys), name
