"""Distillation recipes as configuration: which ways of distilling a row runs, without torch.

A recipe is how the student is trained against the teacher (BEYOND.md §1). The config's
``recipes`` block names the recipes beyond the paper's and their parameters; a list of values is a
list of jobs. Each combination is a :class:`Variant`, with an id that names its run folders
(``results/<dataset>/distill-<id>/...``); the paper's plain KD in the direction of ``kd_direction``
keeps the paper's folder (``results/<dataset>/distill/...``) and the id ``plain``.

=============  =====================================================================  ============
recipe         loss per batch                                                         parameters
=============  =====================================================================  ============
plain          τ²·KL(p_t^τ(x) ‖ p_s^τ(x)), teacher outputs cached once                direction
augmented      τ²·KL(p_t^τ(g·x) ‖ p_s^τ(g·x)), g drawn as augmented training draws    direction
consistency    plain + λ · mean_i ‖softmax(z_s(x_i)) − softmax(z_s(g_i·x_i))‖²          direction, lambda
mixup          τ²·KL(p_t^τ(x̃) ‖ p_s^τ(x̃)), x̃ = a·x_i + (1−a)·x_j, a ~ Beta(α, α)     direction, alpha
=============  =====================================================================  ============

``direction`` (forward: KL(P_t ‖ P_s), the paper's Eq. 2; reverse: KL(P_s ‖ P_t), what the authors'
code computed) defaults to the config's ``kd_direction``; giving both runs them side by side.
``augmented`` and ``consistency`` use a symmetry: the row's, unless the recipe names one
(``symmetry``), which then must exist in every row's dataset.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from kdinv.paths import format_number

RECIPES = ("plain", "augmented", "consistency", "mixup")
"""The recipe kinds (the schema lists the same; a test checks it)."""
USES_SYMMETRY = ("augmented", "consistency")
LIST_PARAMS = {"consistency": ("lambda",), "mixup": ("alpha",)}
"""Parameters of each recipe, besides ``direction``, whose list of values is a list of jobs."""
PAPER = "plain"


@dataclass(frozen=True)
class Variant:
    """One way of distilling, as run: the recipe, its direction and parameter values, and the
    symmetry it applies (None for recipes without one)."""

    recipe: str
    direction: str
    symmetry: str | None = None
    weight: float | None = None  # consistency's λ
    alpha: float | None = None  # mixup's α

    def id(self, kd_direction: str) -> str:
        """The variant's name in paths and the metric table's ``recipe`` column: ``plain`` for
        the paper's runs, else the recipe and every value that sets it apart, e.g.
        ``consistency_lambda0.5_translation`` or ``plain_reverse``."""
        parts = [self.recipe]
        if self.direction != kd_direction:
            parts.append(self.direction)
        if self.weight is not None:
            parts.append(f"lambda{format_number(self.weight)}")
        if self.alpha is not None:
            parts.append(f"alpha{format_number(self.alpha)}")
        if self.symmetry is not None:
            parts.append(self.symmetry)
        return "_".join(parts)

    def spec(self, symmetry_spec: dict | None) -> dict:
        """What a distillation job needs to run it (``symmetry_spec``: the symmetry's config
        entry, for recipes that use one)."""
        return {
            "recipe": self.recipe, "direction": self.direction, "weight": self.weight, "alpha": self.alpha,
            "symmetry": self.symmetry, "transform": symmetry_spec if self.symmetry is not None else None,
        }  # fmt: skip


def _values(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def row_variants(config: dict, row: dict) -> list[Variant]:
    """Every variant a row runs: the paper's plain KD first, then each configured recipe's."""
    kd = config["kd_direction"]
    out = [Variant(PAPER, kd)]
    for recipe, params in (config.get("recipes") or {}).items():
        directions = _values(params.get("direction", kd))
        symmetry = params.get("symmetry", row["symmetry"]) if recipe in USES_SYMMETRY else None
        lists = [_values(params[p]) for p in LIST_PARAMS.get(recipe, ())]
        for direction, *values in itertools.product(directions, *lists):
            kwargs = dict(zip(("weight",) if recipe == "consistency" else ("alpha",), values))
            variant = Variant(recipe, direction, symmetry, **kwargs)
            if variant not in out:
                out.append(variant)
    return out


def variant_ids(config: dict) -> list[str]:
    """Every variant id of the config's rows (the paper's ``plain`` first)."""
    ids = []
    for row in config["rows"]:
        for v in row_variants(config, row):
            if v.id(config["kd_direction"]) not in ids:
                ids.append(v.id(config["kd_direction"]))
    return ids


def variant_attributes(variant: Variant) -> dict:
    """The metric table's description of a variant (besides its id in ``recipe``)."""
    return {
        "recipe_name": variant.recipe,
        "kd_direction": variant.direction,
        "recipe_symmetry": variant.symmetry,
        "recipe_lambda": variant.weight,
        "recipe_alpha": variant.alpha,
    }


def check_recipes(config: dict) -> list[str]:
    """Problems with the ``recipes`` block the schema cannot see (each names its key)."""
    out = []
    for recipe, params in (config.get("recipes") or {}).items():
        directions = _values(params.get("direction", config["kd_direction"]))
        if len(set(directions)) != len(directions):
            out.append(f"recipes.{recipe}.direction: {directions} repeats a direction")
        for p in LIST_PARAMS.get(recipe, ()):
            values = [float(v) for v in _values(params[p])]
            if len(set(values)) != len(values):
                out.append(f"recipes.{recipe}.{p}: {_values(params[p])} repeats a value")
        if recipe in USES_SYMMETRY and "symmetry" in params:
            for i, row in enumerate(config["rows"]):
                ds = config["datasets"].get(row["dataset"])
                if ds is not None and params["symmetry"] not in ds["symmetries"]:
                    out.append(
                        f"recipes.{recipe}.symmetry: {params['symmetry']!r} is not a symmetry of dataset "
                        f"{row['dataset']!r} of rows[{i}] (its symmetries: {sorted(ds['symmetries'])})"
                    )
    return out
