"""Configuration: validation against the JSON schema plus the checks a schema cannot express,
and the pure functions the Snakefile uses to turn rows into targets.

Imports no torch, so building the DAG stays fast.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import yaml

from kdinv.data.kinds import KINDS, image_side, split_sizes
from kdinv.paths import PLAIN, format_number


class ConfigError(ValueError):
    """A config value is wrong; the message names the key."""


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _fill_defaults(schema: dict, instance, root: dict | None = None) -> None:
    """Set every missing key that has a ``default`` in the schema, recursing into objects and lists
    (and through local ``$ref``s)."""
    root = schema if root is None else root
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    if isinstance(instance, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in instance and "default" in sub:
                instance[key] = yaml.safe_load(yaml.safe_dump(sub["default"]))  # a copy
            if key in instance:
                _fill_defaults(sub, instance[key], root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in set(instance) - set(schema.get("properties", {})):
                _fill_defaults(extra, instance[key], root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _fill_defaults(schema["items"], item, root)


def load_schema(path: str | Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def validate_config(config: dict, schema: dict) -> dict:
    """Check ``config`` against ``schema`` and the cross-references; fill defaults in place.

    Raises ConfigError listing every problem, each with the dotted key it concerns. Nothing here
    reads data or imports torch: it runs while Snakemake builds the DAG, before any job.
    """
    from jsonschema import Draft202012Validator  # only the DAG build needs it, not the jobs

    problems = _non_finite(config)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {p}" for p in problems))
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {_key(e.absolute_path)}: {e.message}" for e in errors]
        raise ConfigError("invalid config:\n" + "\n".join(lines))
    problems = _kind_keys(config)
    _fill_defaults(schema, config)
    from kdinv.distill.recipes import check_recipes

    for check in (_temperatures, _rows, _row_models, _symmetries, _memory, _shards, _sources, _runtimes,
                  check_recipes):
        problems += check(config)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {p}" for p in problems))
    return config


def _non_finite(config, path=()) -> list[str]:
    """Every number must be finite: YAML's .nan and .inf pass a schema's bounds (NaN compares
    false with everything), and a NaN temperature or learning rate fails only inside a job."""
    if isinstance(config, dict):
        return [p for k, v in config.items() for p in _non_finite(v, (*path, k))]
    if isinstance(config, list):
        return [p for i, v in enumerate(config) for p in _non_finite(v, (*path, i))]
    if isinstance(config, float) and not math.isfinite(config):
        return [f"{_key(path)}: {config!r} is not a finite number"]
    return []


def _kind_keys(config) -> list[str]:
    out = []
    for name, ds in config["datasets"].items():
        for kind in KINDS.values():
            for key in kind.own_keys:
                if key in ds and ds["kind"] != kind.name:
                    out.append(
                        f"datasets.{name}.{key}: only read for kind {kind.name!r}, this dataset is {ds['kind']!r}"
                    )
    return out


def _temperatures(config) -> list[str]:
    temps = [float(t) for t in config["temperatures"]]
    dupes = sorted({format_number(t) for t in temps if temps.count(t) > 1})
    if dupes:
        return [f"temperatures: duplicate values {dupes} (4 and 4.0 are the same temperature)"]
    return []


def _rows(config) -> list[str]:
    out = []
    names = [row["name"] for row in config["rows"]]
    for i, row in enumerate(config["rows"]):
        if names.count(row["name"]) > 1:
            out.append(f"rows[{i}].name: {row['name']!r} names more than one row")
        dataset = config["datasets"].get(row["dataset"])
        if dataset is None:
            out.append(
                f"rows[{i}].dataset: {row['dataset']!r} is not a configured dataset "
                f"(datasets: {sorted(config['datasets'])})"
            )
        elif row["symmetry"] not in dataset["symmetries"]:
            out.append(
                f"rows[{i}].symmetry: {row['symmetry']!r} is not a symmetry of dataset "
                f"{row['dataset']!r} (datasets.{row['dataset']}.symmetries: {sorted(dataset['symmetries'])})"
            )
        for role in ROLES:
            if row[role] not in config["models"]:
                out.append(
                    f"rows[{i}].{role}: {row[role]!r} is not a configured model (models: {sorted(config['models'])})"
                )
        student = config["models"].get(row["student"])
        if student is not None and "distillation" not in student:
            out.append(f"models.{row['student']}.distillation: required, the model is the student of rows[{i}]")
    return out


ROLES = ("teacher", "teacher_prime", "student")


def _resolved_rows(config):
    """(index, row, dataset, {role: model}) of the rows whose references all exist."""
    for i, row in enumerate(config["rows"]):
        ds = config["datasets"].get(row["dataset"])
        if ds is None or row["symmetry"] not in ds["symmetries"] or any(row[r] not in config["models"] for r in ROLES):
            continue
        yield i, row, ds, {role: config["models"][row[role]] for role in ROLES}


def _row_models(config) -> list[str]:
    """Each model of a row can read the dataset, and the teachers are invariant to the row's
    symmetry by construction (unless the row allows otherwise)."""
    from kdinv.models.capabilities import ARCH_INPUTS, model_invariances
    from kdinv.symmetry.catalog import TRANSFORM_INFO

    out = []
    for i, row, ds, models in _resolved_rows(config):
        kind = KINDS[ds["kind"]].data
        for role, model in models.items():
            if kind not in ARCH_INPUTS[model["arch"]]:
                out.append(
                    f"rows[{i}].{role}: model {row[role]!r} (arch {model['arch']}) reads "
                    f"{' or '.join(sorted(ARCH_INPUTS[model['arch']]))}, but dataset {row['dataset']!r} "
                    f"(kind {ds['kind']}) holds {kind} data"
                )
            group = model.get("group_average")
            if group and kind not in TRANSFORM_INFO[group].acts_on:
                acts_on = " and ".join(sorted(TRANSFORM_INFO[group].acts_on))
                key = f"models.{row[role]}.group_average: {group} acts on {acts_on}"
                out.append(
                    f"{key}, but the model is the {role} of rows[{i}] on dataset {row['dataset']!r} ({kind} data)"
                )
        transform = ds["symmetries"][row["symmetry"]]["transform"]
        if row["allow_non_invariant_teachers"]:
            continue
        for role in ("teacher", "teacher_prime"):
            if transform not in model_invariances(models[role], image_side(ds)):
                out.append(
                    f"rows[{i}].{role}: model {row[role]!r} is not invariant to {transform} (the row's "
                    f"symmetry {row['symmetry']!r}) by construction, so the row would test nothing; "
                    "use a teacher that is (e.g. group_average), or set "
                    f"rows[{i}].allow_non_invariant_teachers: true to run it anyway"
                )
    return out


def config_warnings(config: dict) -> list[str]:
    """Things that are allowed but probably not meant (printed before any job)."""
    from kdinv.models.capabilities import model_invariances

    out = []
    for i, row, ds, models in _resolved_rows(config):
        transform = ds["symmetries"][row["symmetry"]]["transform"]
        if transform in model_invariances(models["student"], image_side(ds)):
            out.append(
                f"rows[{i}].student: model {row['student']!r} is already invariant to {transform} by "
                "construction, so the row cannot show whether distillation transfers the invariance"
            )
        if row["allow_non_invariant_teachers"]:
            for role in ("teacher", "teacher_prime"):
                if transform not in model_invariances(models[role], image_side(ds)):
                    out.append(
                        f"rows[{i}].{role}: model {row[role]!r} is not invariant to {transform} by "
                        "construction (allowed by allow_non_invariant_teachers); no teacher gate checks it"
                    )
    return out


def _symmetries(config) -> list[str]:
    from kdinv.symmetry.catalog import TRANSFORM_INFO

    out = []
    for name, ds in config["datasets"].items():
        kind = KINDS[ds["kind"]].data
        for sym, spec in ds["symmetries"].items():
            acts_on = TRANSFORM_INFO[spec["transform"]].acts_on
            if kind not in acts_on:
                out.append(
                    f"datasets.{name}.symmetries.{sym}.transform: {spec['transform']} acts on "
                    f"{' and '.join(sorted(acts_on))}, dataset {name!r} (kind {ds['kind']}) holds {kind} data"
                )
    return out


COPIES_IN_A_TRAINING_JOB = 3
"""A training job holds the split, its fold's training part and one transformed copy of it."""


def split_mb(dataset: dict) -> float:
    n, floats = split_sizes(dataset)
    return n * floats * 4 / 2**20


def _memory(config) -> list[str]:
    """A size that allocates memory is checked against what a job may use, before any job."""
    out = []
    mem = config["job_resources"]["mem_mb"]
    for name, ds in config["datasets"].items():
        need = COPIES_IN_A_TRAINING_JOB * split_mb(ds)
        if need > mem:
            size_key = KINDS[ds["kind"]].size_key
            keys = [size_key] + (["offline sizes"] if ds["source"] == "offline" else [])
            out.append(
                f"datasets.{name}.{size_key}: the training split would take about "
                f"{split_mb(ds):,.0f} MB and a training job holds about {COPIES_IN_A_TRAINING_JOB} copies "
                f"({need:,.0f} MB), more than job_resources.mem_mb = {mem} MB; lower "
                f"{' or '.join(keys)} or raise job_resources.mem_mb"
            )
    return out


def _shards(config) -> list[str]:
    out = []
    shards = config["job_resources"]["gpu_shards"]
    if shards is not None:
        shared = {f"models.{n}.jobs_per_gpu": m["jobs_per_gpu"] for n, m in config["models"].items()}
        shared["evaluation.jobs_per_gpu"] = config["evaluation"]["jobs_per_gpu"]
        for key, n in shared.items():
            if n > shards:
                out.append(
                    f"{key}: {n} jobs cannot share one GPU of job_resources.gpu_shards = {shards} "
                    f"shards (each needs at least one)"
                )
    return out


def _sources(config) -> list[str]:
    return [
        f"datasets.{name}.local_dir: required when source is 'local'"
        for name, ds in config["datasets"].items()
        if ds["source"] == "local" and not ds.get("local_dir")
    ]


def _runtimes(config) -> list[str]:
    resources = config["job_resources"]
    if resources["max_runtime"] < resources["runtime"]:
        return [
            (f"job_resources.max_runtime: {resources['max_runtime']} minutes is less than "
            f"job_resources.runtime ({resources['runtime']}), the time limit of a first attempt")
        ]
    return []


def canonical(value):
    """``value`` with every dict's keys sorted, recursively.

    Snakemake compares a job's params with the recorded ones by their text, so two configs that
    differ only in key order (a YAML file rewritten by a tool, a --configfile merge) would rerun
    every job; rules pass their params through this to make the order irrelevant.
    """
    return json.loads(json.dumps(value, sort_keys=True))


def derive_seed(base: int, *parts) -> int:
    """A stable 31-bit seed from the base seed and a job's wildcards (same on every machine)."""
    digest = hashlib.sha256("/".join(map(str, (base, *parts))).encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


# Keys of a symmetry's config entry that concern augmented training, not the transform itself.
AUGMENT_KEYS = ("augment_identity_prob",)


def im_symmetries(dataset: dict) -> dict:
    """The dataset's symmetries as the evaluation needs them (without augmentation-only keys)."""
    return canonical(
        {
            name: {k: v for k, v in spec.items() if k not in AUGMENT_KEYS}
            for name, spec in dataset["symmetries"].items()
        }
    )


def trained_runs(config: dict) -> list[tuple[str, str, str]]:
    """(dataset, model, augment) of every supervised training the rows need, without duplicates.

    ``augment`` is "plain" or the name of the row's symmetry (training on transformed data).
    """
    runs = []
    for row in config["rows"]:
        d = row["dataset"]
        for run in (
            (d, row["student"], PLAIN),
            (d, row["student"], row["symmetry"]),
            (d, row["teacher"], PLAIN),
            (d, row["teacher_prime"], PLAIN),
        ):
            if run not in runs:
                runs.append(run)
    return runs


def distillations(config: dict) -> list[tuple[str, str, str, str, str]]:
    """(dataset, teacher, teacher augment, student, recipe variant) of every distillation: s→s,
    s_aug→s, t→s, t'→s' for every variant of every row (the paper's ``plain`` first; see
    :mod:`kdinv.distill.recipes`)."""
    from kdinv.distill.recipes import row_variants

    runs = []
    for row in config["rows"]:
        d, s = row["dataset"], row["student"]
        for variant in row_variants(config, row):
            vid = variant.id(config["kd_direction"])
            for run in (
                (d, s, PLAIN, s, vid),
                (d, s, row["symmetry"], s, vid),
                (d, row["teacher"], PLAIN, s, vid),
                (d, row["teacher_prime"], PLAIN, s, vid),
            ):
                if run not in runs:
                    runs.append(run)
    return runs


def variants_by_id(config: dict) -> dict:
    """Every recipe variant of the config's rows by its id (``plain``: the paper's)."""
    from kdinv.distill.recipes import row_variants

    return {v.id(config["kd_direction"]): v for row in config["rows"] for v in row_variants(config, row)}


def teacher_gates(config: dict, dataset: str, teacher: str, teacher_augment: str) -> dict[str, dict]:
    """The symmetries (name -> transform entry) a distillation's teacher must be invariant to
    before it is distilled: those of the rows in which it is t or t' (docs/method.md, "The
    teacher gate"), unless the row allows a non-invariant teacher. Empty for a student as
    teacher (s→s, s_aug→s)."""
    gates = {}
    if teacher_augment != PLAIN:
        return gates
    for row in config["rows"]:
        if (row["dataset"] == dataset and teacher in (row["teacher"], row["teacher_prime"])
                and not row.get("allow_non_invariant_teachers")):
            spec = config["datasets"][dataset]["symmetries"][row["symmetry"]]
            gates[row["symmetry"]] = {k: v for k, v in spec.items() if k not in AUGMENT_KEYS}
    return canonical(gates)


def fidelity_references(config: dict, dataset: str, teacher: str, teacher_augment: str, student: str):
    """The teachers a distilled model's fidelity is measured against: its own teacher and, where
    it is some row's s' (distilled from that row's t'), that row's teacher t (paper §3.4)."""
    refs = [(teacher, teacher_augment)]
    for row in config["rows"]:
        if (
            row["dataset"] == dataset
            and row["student"] == student
            and row["teacher_prime"] == teacher
            and teacher_augment == PLAIN
            and (row["teacher"], PLAIN) not in refs
        ):
            refs.append((row["teacher"], PLAIN))
    return refs


RUN_PACKAGES = ("torch", "torchvision", "numpy", "pandas", "pyarrow", "scikit-learn", "scipy", "h5py",
                "matplotlib", "seaborn", "snakemake", "jsonschema", "pyyaml")


def run_settings(config: dict, packages=RUN_PACKAGES) -> dict:
    """What ``results/run_settings.yaml`` records of a run: each dataset's source, the Python,
    the platform, the versions of ``packages`` ("not installed" for one that is not) and the
    validated ``config``."""
    import platform
    from importlib import metadata

    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "data_sources": {name: ds["source"] for name, ds in config["datasets"].items()},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "config": config,
    }


def write_run_settings(config: dict, out: str | Path) -> None:
    """Rule write_run_settings: :func:`run_settings` as YAML, in key order, written atomically."""
    import logging

    out = Path(out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(run_settings(config), sort_keys=False))
    tmp.replace(out)
    logging.getLogger(__name__).info("settings written to %s", out)
