"""Distillation recipes: each one object that says what it is, and the variants a config runs.

A recipe is how the student is trained against the teacher (docs/beyond.md, "Distillation
recipes"). Each is one :class:`Recipe` in :data:`RECIPES`: its name (the key of the config's
``recipes`` block), its parameters (named as in the config), whether it applies a symmetry,
when it needs the teacher run on every batch, and its loss. Nothing outside this module asks
for a recipe by its name: the config checks, the variants, the run folders, the distillation
job and the metric table all ask the object.

=============  =====================================================================  ============
recipe         loss per batch                                                         parameters
=============  =====================================================================  ============
plain          τ²·KL(p_t^τ(x) ‖ p_s^τ(x)), teacher outputs cached once                direction
augmented      τ²·KL(p_t^τ(g·x) ‖ p_s^τ(g·x)), g drawn as augmented training draws    direction
consistency    plain + λ · mean_i ‖softmax(z_s(x_i)) − softmax(z_s(g_i·x_i))‖²          direction, lambda
mixup          τ²·KL(p_t^τ(x̃) ‖ p_s^τ(x̃)), x̃ = a·x_i + (1−a)·x_j, a ~ Beta(α, α)     direction, alpha
=============  =====================================================================  ============

The config's ``recipes`` block names the recipes beyond the paper's and their parameters; a list
of values is a list of jobs. Each combination is a :class:`Variant`, with an id that names its run
folders (``results/<dataset>/distill-<id>/...``); the paper's plain KD in the direction of
``kd_direction`` keeps the paper's folder (``results/<dataset>/distill/...``) and the id ``plain``.
``direction`` (forward: KL(P_t ‖ P_s), the paper's Eq. 2; reverse: KL(P_s ‖ P_t), what the authors'
code computed) defaults to the config's ``kd_direction``; giving both runs them side by side. A
recipe that applies a symmetry takes the row's, unless the recipe names one (``symmetry``), which
then must exist in every row's dataset.

Imports no torch (the DAG build reads it); a recipe's loss imports it when the job builds it.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kdinv.paths import format_number

PAPER = "plain"
"""The paper's recipe, and the id of its variant in ``kd_direction``."""

TEACHER_USES = ("never", "unless_invariant", "always")
"""When a recipe runs the teacher on every batch instead of using its cached outputs on x:
never; on g·x unless the teacher is shown invariant to the recipe's symmetry (then its outputs on
g·x are the cache on x); always (the cache cannot hold the inputs the student sees)."""


@dataclass(frozen=True)
class Param:
    """A recipe's parameter whose list of values is a list of jobs.

    Attributes:
        key: its name in the config (``recipes.<recipe>.<key>``), in the variant id
            (``<key><value>``) and in the metric table (``recipe_<key>``).
        job_key: its key in the distillation job's ``recipe`` params (default: ``key``).
        every_variant: every variant's job params and metric rows carry it, None where the recipe
            has no such parameter. True only for the parameters that existed before recipes were
            objects, so that the recorded params of finished jobs stay equal (Snakemake reruns a
            job whose params changed) and the table keeps its columns; a new parameter leaves it
            False, so adding a recipe reruns nothing.
    """

    key: str
    job_key: str | None = None
    every_variant: bool = False

    @property
    def in_job(self) -> str:
        return self.job_key or self.key

    @property
    def column(self) -> str:
        return param_column(self.key)


def param_column(key: str) -> str:
    """The metric table's column of a recipe parameter (``lambda`` -> ``recipe_lambda``)."""
    return f"recipe_{key}"


LossBuilder = Callable[..., Callable]
"""``loss(values, kd, augment, teacher)`` -> the batch loss (``kdinv.training.BatchLoss``).
``values``: the variant's parameter values by config key; ``kd(student_logits, teacher_logits)``:
the τ²-scaled KL in the variant's direction at the job's temperature; ``augment(x, generator)``:
the symmetry's transform, for recipes that need one; ``teacher``: the teacher to run on the
batch, or None where the cached logits (``batch.targets``) stand for it."""


@dataclass(frozen=True)
class Recipe:
    """One way of distilling.

    Attributes:
        name: the key of the config's ``recipes`` block, the start of its variants' ids.
        loss: builds the batch loss (:data:`LossBuilder`), or the ``"module:function"`` name of
            one, imported when a job builds its loss (the workflow's own are in
            :mod:`kdinv.distill.losses`, which imports torch; this module does not). Run the student through
            ``batch.forward``; draw the step's randomness from ``batch.generator`` or
            ``batch.seed`` (they depend only on the job's seed, epoch and step, so a resumed job
            draws what an uninterrupted one draws).
        params: its parameters besides ``direction`` and ``symmetry`` (:class:`Param`).
        needs_symmetry: it applies a symmetry (the row's or its ``symmetry`` key's).
        teacher_every_batch: when the job runs the teacher on every batch (:data:`TEACHER_USES`).
    """

    name: str
    loss: LossBuilder | str
    params: tuple[Param, ...] = ()
    needs_symmetry: bool = False
    teacher_every_batch: str = "never"

    def __post_init__(self):
        if self.teacher_every_batch not in TEACHER_USES:
            raise ValueError(f"recipe {self.name}: teacher_every_batch must be one of {TEACHER_USES}")
        if self.teacher_every_batch == "unless_invariant" and not self.needs_symmetry:
            raise ValueError(f"recipe {self.name}: invariant to what? 'unless_invariant' needs a symmetry")

    @property
    def param_keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.params)

    def values_of(self, spec: Mapping) -> dict:
        """The parameter values (by config key) of a job's recipe params (:meth:`Variant.spec`)."""
        return {p.key: spec[p.in_job] for p in self.params}

    def loss_builder(self) -> LossBuilder:
        """The function that builds this recipe's batch loss (``loss``, imported where it is named
        ``"module:function"``); :func:`kdinv.distill.losses.recipe_loss` calls it."""
        if not isinstance(self.loss, str):
            return self.loss
        module, _, function = self.loss.partition(":")
        return getattr(importlib.import_module(module), function)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(PAPER, "kdinv.distill.losses:plain_loss"),
        Recipe("augmented", "kdinv.distill.losses:augmented_loss", needs_symmetry=True,
               teacher_every_batch="unless_invariant"),
        Recipe("consistency", "kdinv.distill.losses:consistency_loss",
               (Param("lambda", job_key="weight", every_variant=True),), needs_symmetry=True),
        Recipe("mixup", "kdinv.distill.losses:mixup_loss", (Param("alpha", every_variant=True),),
               teacher_every_batch="always"),
    )
}
"""Every recipe by name (the schema's ``recipes`` block lists the same; a test checks it)."""


def every_variant_params() -> list[Param]:
    """The parameters every variant records (:attr:`Param.every_variant`), in registry order."""
    return [p for r in RECIPES.values() for p in r.params if p.every_variant]


# ------------------------------------------------------------------------------- the variants
@dataclass(frozen=True)
class Variant:
    """One way of distilling, as run: the recipe, its direction and parameter values (config key,
    value) in the recipe's order, and the symmetry it applies (None for recipes without one)."""

    recipe: str
    direction: str
    symmetry: str | None = None
    values: tuple[tuple[str, float], ...] = ()

    @property
    def kind(self) -> Recipe:
        return RECIPES[self.recipe]

    def id(self, kd_direction: str) -> str:
        """The variant's name in paths and the metric table's ``recipe`` column: ``plain`` for
        the paper's runs, else the recipe and every value that sets it apart, e.g.
        ``consistency_lambda0.5_translation`` or ``plain_reverse``."""
        parts = [self.recipe]
        if self.direction != kd_direction:
            parts.append(self.direction)
        parts += [f"{key}{format_number(value)}" for key, value in self.values]
        if self.symmetry is not None:
            parts.append(self.symmetry)
        return "_".join(parts)

    def spec(self, symmetry_spec: dict | None) -> dict:
        """What a distillation job needs to run it (``symmetry_spec``: the symmetry's config
        entry, for recipes that use one)."""
        by_key = {p.key: p for p in self.kind.params}
        return {
            "recipe": self.recipe, "direction": self.direction,
            **{p.in_job: None for p in every_variant_params()},
            **{by_key[key].in_job: value for key, value in self.values},
            "symmetry": self.symmetry, "transform": symmetry_spec if self.symmetry is not None else None,
        }  # fmt: skip


def _values(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def row_variants(config: dict, row: dict) -> list[Variant]:
    """Every variant a row runs: the paper's plain KD first, then each configured recipe's."""
    kd = config["kd_direction"]
    out = [Variant(PAPER, kd)]
    for name, params in (config.get("recipes") or {}).items():
        recipe = RECIPES[name]
        directions = _values(params.get("direction", kd))
        symmetry = params.get("symmetry", row["symmetry"]) if recipe.needs_symmetry else None
        lists = [_values(params[key]) for key in recipe.param_keys]
        for direction, *values in itertools.product(directions, *lists):
            variant = Variant(name, direction, symmetry, tuple(zip(recipe.param_keys, values)))
            if variant not in out:
                out.append(variant)
    return out


def variant_attributes(variant: Variant) -> dict:
    """The metric table's description of a variant (besides its id in ``recipe``)."""
    by_key = {p.key: p for p in variant.kind.params}
    return {
        "recipe_name": variant.recipe,
        "kd_direction": variant.direction,
        "recipe_symmetry": variant.symmetry,
        **{p.column: None for p in every_variant_params()},
        **{by_key[key].column: value for key, value in variant.values},
    }


def check_recipes(config: dict) -> list[str]:
    """Problems with the ``recipes`` block the schema cannot see (each names its key)."""
    out = []
    for name, params in (config.get("recipes") or {}).items():
        recipe = RECIPES[name]
        directions = _values(params.get("direction", config["kd_direction"]))
        if len(set(directions)) != len(directions):
            out.append(f"recipes.{name}.direction: {directions} repeats a direction")
        for key in recipe.param_keys:
            values = [float(v) for v in _values(params[key])]
            if len(set(values)) != len(values):
                out.append(f"recipes.{name}.{key}: {_values(params[key])} repeats a value")
        if recipe.needs_symmetry and "symmetry" in params:
            for i, row in enumerate(config["rows"]):
                ds = config["datasets"].get(row["dataset"])
                if ds is not None and params["symmetry"] not in ds["symmetries"]:
                    out.append(
                        f"recipes.{name}.symmetry: {params['symmetry']!r} is not a symmetry of dataset "
                        f"{row['dataset']!r} of rows[{i}] (its symmetries: {sorted(ds['symmetries'])})"
                    )
    return out
