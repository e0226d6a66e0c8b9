"""The path grammar of ``results/``, declared once.

Every trained or distilled model has a run folder whose path names it; the rules build their
outputs, logs and benchmarks from the templates here, the evaluation copies the identifiers of a
run into the metric table, and the training curves read them back from checkpoint paths. Each kind
of run is one :class:`RunKind`: its folder template and, per wildcard, the column of the metric
table it fills and how its text converts to and from the column's value. A new wildcard is one
more :class:`Field` in a template; the rules' paths, the log paths, the parser and the identifier
columns follow from it.

=========  ======================================================================================
kind       run folder
=========  ======================================================================================
train      ``results/{dataset}/train/{model}/{augment}/fold{fold}``
distill    ``results/{dataset}/{method}/{teacher}/{teacher_augment}/{student}/T{temperature}/fold{fold}``
=========  ======================================================================================

``{augment}`` is "plain" or a symmetry name (training on transformed data); ``{temperature}`` is
written in one spelling (4, not 4.0; :func:`format_number`). ``{method}`` is ``distill`` for the
paper's plain KD and ``distill-<variant>`` for a distillation recipe's variant
(:mod:`kdinv.distill.recipes`); the ``recipe`` column holds ``plain`` or the variant. A distilled
student is trained on plain data, so its ``augment`` column is "plain" and its ``model`` column is
the student.

The evaluation of a dataset's fold writes one table per group of runs that a config edit adds or
removes together (:data:`EVALUATION`): the trained models, and the distillations of one method at
one temperature.

Imports no torch and no pandas: the Snakefile reads it while building the DAG.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath

PLAIN = "plain"
"""The ``augment`` of a model trained on untransformed data."""

NAME = r"[^/]+"
"""What a name wildcard matches in a path (the Snakefile constrains it to the configured names)."""


def format_number(value: float | str) -> str:
    """The one spelling of a number in paths: 4 and 4.0 -> "4", 0.5 -> "0.5", 1e-7 -> "1e-07".

    ``repr`` of the float is the shortest text that reads back as the same float, so the spelling
    round-trips exactly (``float(format_number(x)) == float(x)``) and two different values never
    share a path.
    """
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{value!r} is not a finite number")
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


NUMBER = r"\d+(?:\.\d+)?(?:e[-+]\d+)?"
"""What :func:`format_number` writes for a non-negative number."""


@dataclass(frozen=True)
class Field:
    """One wildcard of a run folder.

    Attributes:
        wildcard: its name in the template.
        column: the metric table's column it fills (default: the wildcard's name).
        regex: what its text matches in a path.
        parse: text -> the column's value; ``format`` the reverse (default: the text itself).
    """

    wildcard: str
    column: str | None = None
    regex: str = NAME
    parse: Callable[[str], object] = str
    format: Callable[[object], str] = str

    @property
    def name(self) -> str:
        return self.column or self.wildcard


@dataclass(frozen=True)
class RunKind:
    """A kind of run folder: its template, its fields and the columns it fixes."""

    kind: str
    template: str
    fields: tuple[Field, ...]
    constants: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        named = set(re.findall(r"{(\w+)}", self.template))
        declared = {f.wildcard for f in self.fields}
        if named != declared:
            raise ValueError(f"{self.kind}: template wildcards {sorted(named)} != fields {sorted(declared)}")

    @property
    def wildcards(self) -> list[str]:
        return [f.wildcard for f in self.fields]

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields] + list(self.constants)

    @property
    def wildcard_path(self) -> str:
        """The template's wildcard-bearing segments, e.g. ``{dataset}/{model}/{augment}/fold{fold}``:
        the path of this run's log (``logs/<rule>/<it>.log``) and benchmark."""
        return "/".join(s for s in self.template.split("/") if "{" in s)

    def log(self, rule: str) -> str:
        return f"logs/{rule}/{self.wildcard_path}.log"

    def benchmark(self, rule: str) -> str:
        return f"logs/benchmarks/{rule}/{self.wildcard_path}.tsv"

    def directory(self, **values) -> str:
        """The run folder of ``values`` (wildcard -> value; formatted by each field)."""
        return self.template.format(**{f.wildcard: f.format(values[f.wildcard]) for f in self.fields})

    def identifiers(self, wildcards: Mapping[str, str]) -> dict:
        """The metric table's identifier columns of a run, from its wildcards (text)."""
        ids = {"kind": self.kind}
        ids.update({f.name: f.parse(str(wildcards[f.wildcard])) for f in self.fields})
        ids.update(self.constants)
        return ids

    def regex(self) -> re.Pattern:
        """Matches a run folder (anywhere in a path: ``.../results/...``, to its end)."""
        out, pos = "", 0
        for m in re.finditer(r"{(\w+)}", self.template):
            out += re.escape(self.template[pos : m.start()])
            f = next(f for f in self.fields if f.wildcard == m.group(1))
            out += f"(?P<{f.wildcard}>{f.regex})"
            pos = m.end()
        out += re.escape(self.template[pos:])
        return re.compile(r"(?:^|/)" + out + "$")


def _fold(text: str) -> int:
    return int(text)


def method_of(recipe: str) -> str:
    """The run folder's ``{method}`` segment of a recipe variant (``plain``: the paper's)."""
    return "distill" if recipe == PLAIN else f"distill-{recipe}"


def recipe_of(method: str) -> str:
    return PLAIN if method == "distill" else method.removeprefix("distill-")


def _temperature(text: str) -> float:
    return float(text)


TRAIN = RunKind(
    "train",
    "results/{dataset}/train/{model}/{augment}/fold{fold}",
    (
        Field("dataset"),
        Field("model"),
        Field("augment"),
        Field("fold", regex=r"\d+", parse=_fold),
    ),
    constants={"teacher": None, "teacher_augment": None, "temperature": math.nan, "recipe": None},
)
DISTILL = RunKind(
    "distill",
    "results/{dataset}/{method}/{teacher}/{teacher_augment}/{student}/T{temperature}/fold{fold}",
    (
        Field("dataset"),
        Field("method", column="recipe", regex=r"distill(?:-[^/]+)?", parse=recipe_of, format=method_of),
        Field("teacher"),
        Field("teacher_augment"),
        Field("student", column="model"),
        Field("temperature", regex=NUMBER, parse=_temperature, format=format_number),
        Field("fold", regex=r"\d+", parse=_fold),
    ),
    constants={"augment": PLAIN},
)
RUN_KINDS: dict[str, RunKind] = {k.kind: k for k in (TRAIN, DISTILL)}

ID_COLUMNS: list[str] = ["kind", "dataset", "model", "augment", "teacher", "teacher_augment",
                         "recipe", "temperature", "fold"]  # fmt: skip
"""The identifier columns of a run, in table order (every kind fills each of them)."""

RUN_COLUMNS: list[str] = [c for c in ID_COLUMNS if c not in ("dataset", "fold")]
"""What tells the runs of one dataset and fold apart (a model's series over folds)."""

for _kind in RUN_KINDS.values():
    if set(_kind.columns) | {"kind"} != set(ID_COLUMNS):
        raise ValueError(f"{_kind.kind}: columns {sorted(_kind.columns)} do not cover {ID_COLUMNS}")


EVALUATION = {
    "trained": "results/{dataset}/evaluation/fold{fold}/trained.parquet",
    "trained_logits": "results/{dataset}/evaluation/fold{fold}/trained_test_logits.pt",
    "distilled": "results/{dataset}/evaluation/fold{fold}/{method}-T{temperature}.parquet",
}
"""The evaluation tables of one dataset's fold: every trained model's (and their test logits, the
references of fidelity), and per method and temperature every distilled student's."""


def parse_run_dir(path: str | PurePath) -> dict:
    """The identifier columns of the run whose folder is ``path`` (or a file in it); ValueError
    when the path follows no kind's template."""
    text = PurePath(path).as_posix()
    for kind in RUN_KINDS.values():
        m = kind.regex().search(text)
        if m:
            return {c: kind.identifiers(m.groupdict()).get(c) for c in ID_COLUMNS}
    raise ValueError(
        f"{path}: not a run folder; expected one of "
        + "; ".join(k.template for k in RUN_KINDS.values())
    )


def run_label(ids: Mapping) -> str:
    """A short name of a run without its fold: "model (augment)" or "teacher[ (aug)] → student, T"."""
    if ids["kind"] == TRAIN.kind:
        return ids["model"] if ids["augment"] == PLAIN else f"{ids['model']} ({ids['augment']})"
    teacher = ids["teacher"] if ids["teacher_augment"] == PLAIN else f"{ids['teacher']} ({ids['teacher_augment']})"
    recipe = "" if ids.get("recipe", PLAIN) == PLAIN else f" [{ids['recipe']}]"
    return f"{teacher} → {ids['model']}{recipe}, T={ids['temperature']:g}"
