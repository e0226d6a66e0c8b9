"""Configuration: validation against the JSON schema plus the checks a schema cannot express,
and the pure functions the Snakefile uses to turn rows into targets.

Imports no torch, so building the DAG stays fast.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml


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


# Dataset keys that only one kind reads; setting one for another kind is an error, not a no-op.
KIND_KEYS = {
    "mnist": ("verify_checksums", "offline_test_fraction", "pad_to"),
    "modelnet40": ("offline_train_per_class", "offline_test_per_class", "num_points"),
    "jets": ("offline_files", "offline_jets_per_file", "n_constituents", "pt_min"),
}
# Where source download fetches from when url is null (the official locations).
OFFICIAL_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "modelnet40": "http://modelnet.cs.princeton.edu/ModelNet40.zip",
    "jets": "https://zenodo.org/records/3602260/files/",
}


def dataset_url(dataset: dict) -> str:
    return dataset.get("url") or OFFICIAL_URLS[dataset["kind"]]


def load_schema(path: str | Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def validate_config(config: dict, schema: dict) -> dict:
    """Check ``config`` against ``schema`` and the cross-references; fill defaults in place.

    Raises ConfigError listing every problem, each with the dotted key it concerns.
    """
    from jsonschema import Draft202012Validator  # only the DAG build needs it, not the jobs

    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {_key(e.absolute_path)}: {e.message}" for e in errors]
        raise ConfigError("invalid config:\n" + "\n".join(lines))
    problems = []
    for name, ds in config["datasets"].items():
        for kind, keys in KIND_KEYS.items():
            for key in keys:
                if key in ds and ds["kind"] != kind:
                    problems.append(
                        f"datasets.{name}.{key}: only read for kind {kind!r}, this dataset is {ds['kind']!r}"
                    )
    _fill_defaults(schema, config)
    temps = [float(t) for t in config["temperatures"]]
    dupes = sorted({format_temperature(t) for t in temps if temps.count(t) > 1})
    if dupes:
        problems.append(f"temperatures: duplicate values {dupes} (4 and 4.0 are the same temperature)")
    names = [row["name"] for row in config["rows"]]
    for i, row in enumerate(config["rows"]):
        if names.count(row["name"]) > 1:
            problems.append(f"rows[{i}].name: {row['name']!r} names more than one row")
        dataset = config["datasets"].get(row["dataset"])
        if dataset is None:
            problems.append(
                f"rows[{i}].dataset: {row['dataset']!r} is not a configured dataset "
                f"(datasets: {sorted(config['datasets'])})"
            )
        elif row["symmetry"] not in dataset["symmetries"]:
            problems.append(
                f"rows[{i}].symmetry: {row['symmetry']!r} is not a symmetry of dataset "
                f"{row['dataset']!r} (datasets.{row['dataset']}.symmetries: {sorted(dataset['symmetries'])})"
            )
        for role in ("teacher", "teacher_prime", "student"):
            if row[role] not in config["models"]:
                problems.append(
                    f"rows[{i}].{role}: {row[role]!r} is not a configured model "
                    f"(models: {sorted(config['models'])})"
                )
    for i, row in enumerate(config["rows"]):
        student = config["models"].get(row["student"])
        if student is not None and "distillation" not in student:
            problems.append(
                f"models.{row['student']}.distillation: required, the model is the student of rows[{i}]"
            )
    shards = config["job_resources"]["gpu_shards"]
    if shards is not None:
        shared = {f"models.{n}.jobs_per_gpu": m["jobs_per_gpu"] for n, m in config["models"].items()}
        shared["evaluation.jobs_per_gpu"] = config["evaluation"]["jobs_per_gpu"]
        for key, n in shared.items():
            if n > shards:
                problems.append(
                    f"{key}: {n} jobs cannot share one GPU of job_resources.gpu_shards = {shards} "
                    f"shards (each needs at least one)"
                )
    resources = config["job_resources"]
    if resources["max_runtime"] < resources["runtime"]:
        problems.append(
            f"job_resources.max_runtime: {resources['max_runtime']} minutes is less than "
            f"job_resources.runtime ({resources['runtime']}), the time limit of a first attempt"
        )
    for name, ds in config["datasets"].items():
        if ds["source"] == "local" and not ds.get("local_dir"):
            problems.append(f"datasets.{name}.local_dir: required when source is 'local'")
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {p}" for p in problems))
    return config


def canonical(value):
    """``value`` with every dict's keys sorted, recursively.

    Snakemake compares a job's params with the recorded ones by their text, so two configs that
    differ only in key order (a YAML file rewritten by a tool, a --configfile merge) would rerun
    every job; rules pass their params through this to make the order irrelevant.
    """
    return json.loads(json.dumps(value, sort_keys=True))


def format_temperature(t: float | int | str) -> str:
    """The one spelling of a temperature in paths: 4 and 4.0 -> "4", 0.5 -> "0.5"."""
    text = f"{float(t):.6f}".rstrip("0").rstrip(".")
    return text


def derive_seed(base: int, *parts) -> int:
    """A stable 31-bit seed from the base seed and a job's wildcards (same on every machine)."""
    digest = hashlib.sha256("/".join(map(str, (base, *parts))).encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


PLAIN = "plain"
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


def distillations(config: dict) -> list[tuple[str, str, str, str]]:
    """(dataset, teacher, teacher augment, student) of every distillation: s→s, s_aug→s, t→s, t'→s'."""
    runs = []
    for row in config["rows"]:
        d, s = row["dataset"], row["student"]
        for run in (
            (d, s, PLAIN, s),
            (d, s, row["symmetry"], s),
            (d, row["teacher"], PLAIN, s),
            (d, row["teacher_prime"], PLAIN, s),
        ):
            if run not in runs:
                runs.append(run)
    return runs


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
