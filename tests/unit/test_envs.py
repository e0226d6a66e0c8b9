"""Software environments: the conda envs, requirements.txt and the rules' conda directives agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))
RULE_FILES = sorted((ROOT / "rules").glob("*.smk"))
# What the workflow's scripts import (directly or through kdinv).
SCRIPT_PACKAGES = ["torch", "torchvision", "numpy", "pandas", "pyarrow", "scikit-learn",
                   "jsonschema", "pyyaml", "matplotlib", "seaborn"]

VERSION = r"[0-9][0-9A-Za-z.+!_-]*"  # no wildcards, ranges or spaces
CONDA_PIN = re.compile(rf"^(?P<name>[A-Za-z0-9_.-]+)==?(?P<version>{VERSION})$")
PIP_PIN = re.compile(rf"^(?P<name>[A-Za-z0-9_.\[\]-]+)==(?P<version>{VERSION})$")


def normalise(name: str) -> str:
    """PEP 503 normalisation: PyYAML == pyyaml, scikit_learn == scikit-learn."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith(("-r", "--requirement")):
            continue
        match = PIP_PIN.match(line)
        assert match, f"{path.name}: {raw!r} is not pinned as name==version"
        pins[normalise(match["name"])] = match["version"]
    return pins


REQUIREMENTS = parse_requirements(ROOT / "requirements.txt")


def load_env(path: Path) -> dict:
    env = yaml.safe_load(path.read_text())
    assert isinstance(env, dict), f"{path.name}: not a mapping"
    return env


def conda_deps(env: dict) -> list[str]:
    return [d for d in env.get("dependencies", []) if isinstance(d, str)]


def pip_deps(env: dict) -> list[str]:
    lists = [d["pip"] for d in env.get("dependencies", []) if isinstance(d, dict) and "pip" in d]
    return [p for sub in lists for p in sub]


def env_pip_pins(path: Path) -> dict[str, str]:
    pins = {}
    for dep in pip_deps(load_env(path)):
        match = PIP_PIN.match(dep.strip())
        assert match, f"{path.name}: pip dependency {dep!r} is not pinned as name==version"
        pins[normalise(match["name"])] = match["version"]
    return pins


def test_there_are_envs_and_rules():
    assert {p.name for p in ENV_FILES} >= {"torch.yaml", "plot.yaml"}
    assert RULE_FILES


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_channels_and_python(path):
    env = load_env(path)
    assert env.get("channels") == ["conda-forge", "nodefaults"]
    assert "python=3.11" in conda_deps(env)
    assert not [d for d in conda_deps(env) if d.startswith("python") and d != "python=3.11"]


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_every_env_package_is_pinned_exactly(path):
    env = load_env(path)
    for dep in env["dependencies"]:
        assert isinstance(dep, str) or (isinstance(dep, dict) and set(dep) == {"pip"}), dep
    for dep in conda_deps(env):
        if dep == "python=3.11":
            continue
        assert CONDA_PIN.match(dep), f"{path.name}: conda dependency {dep!r} has no exact version"
    assert pip_deps(env), f"{path.name}: no pip packages"
    pip_pinned = any(d.startswith("pip=") for d in conda_deps(env))
    assert pip_pinned, f"{path.name}: pip itself is not pinned"
    env_pip_pins(path)  # asserts name==version for each


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_equal_requirements(path):
    for name, version in env_pip_pins(path).items():
        assert name in REQUIREMENTS, f"{path.name}: {name} is not in requirements.txt"
        assert version == REQUIREMENTS[name], (
            f"{path.name}: {name}=={version} but requirements.txt pins {REQUIREMENTS[name]}"
        )


def test_every_script_package_is_in_an_env():
    in_envs = set()
    for path in ENV_FILES:
        in_envs |= set(env_pip_pins(path))
        in_envs |= {normalise(CONDA_PIN.match(d)["name"]) for d in conda_deps(load_env(path))
                    if CONDA_PIN.match(d)}
    for name in SCRIPT_PACKAGES:
        assert name in REQUIREMENTS, f"requirements.txt lacks {name}"
        assert name in in_envs, f"no env provides {name}"


def test_requirements_core_pins():
    assert REQUIREMENTS["torch"] == "2.14.1"
    assert REQUIREMENTS["torchvision"] == "0.29.1"
    assert re.fullmatch(r"9\.\d+(\.\d+)*", REQUIREMENTS["snakemake"])


def test_test_requirements_include_the_runtime_ones():
    lines = (ROOT / "requirements-test.txt").read_text().splitlines()
    assert "-r requirements.txt" in [line.strip() for line in lines]
    test_pins = parse_requirements(ROOT / "requirements-test.txt")
    assert not set(test_pins) & set(REQUIREMENTS), "a package is pinned in both files"


RULE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.MULTILINE)
CONDA = re.compile(r"^\s+conda:\s*\n\s+(['\"])(?P<path>[^'\"]+)\1\s*$", re.MULTILINE)


def rule_blocks(path: Path) -> dict[str, str]:
    text = path.read_text()
    starts = list(RULE.finditer(text))
    blocks = {}
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        # a block also ends at the next top-level statement (def, localrules, ...)
        body = text[match.end():end]
        top = re.search(r"^\S", body, re.MULTILINE)
        blocks[match[1]] = body[: top.start()] if top else body
    return blocks


ALL_RULES = [(path, name, body) for path in RULE_FILES for name, body in rule_blocks(path).items()]


def test_rules_are_found():
    names = {name for _, name, _ in ALL_RULES}
    assert {"train_model", "distill_student", "evaluate_trained", "collect_metrics"} <= names


@pytest.mark.parametrize(
    "path, name, body", ALL_RULES, ids=[f"{p.stem}:{n}" for p, n, _ in ALL_RULES]
)
def test_every_rule_has_a_conda_env(path, name, body):
    matches = list(CONDA.finditer(body))
    assert len(matches) == 1, (
        f"{path.name}: rule {name} has {len(matches)} quoted conda: directives"
    )
    env = (path.parent / matches[0]["path"]).resolve()
    assert env.exists(), f"{path.name}: rule {name} points at missing {matches[0]['path']}"
    assert env in [p.resolve() for p in ENV_FILES], f"rule {name}: {env} is not an envs/*.yaml file"


# --- each rule's env holds what its script imports ----------------------------------------------

SCRIPTS = ROOT / "workflow" / "scripts"
# import name -> distribution name; pandas reads and writes the metric tables as parquet (pyarrow)
DISTRIBUTION = {"sklearn": "scikit-learn", "yaml": "pyyaml"}
IMPLIES = {"pandas": {"pyarrow"}}


def unconditional(tree):
    """The AST's nodes, without the bodies of if statements."""
    import ast

    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, ast.If):
            todo.extend(ast.iter_child_nodes(node))


def kdinv_files(name: str) -> list[Path]:
    """The files a ``kdinv.a.b`` import executes: each package's ``__init__.py`` on the way and the
    module itself (a name that is not a module, e.g. an imported function, adds nothing)."""
    files, path = [], SCRIPTS
    for part in name.split("."):
        path = path / part
        if (path / "__init__.py").exists():
            files.append(path / "__init__.py")
        elif path.with_suffix(".py").exists():
            files.append(path.with_suffix(".py"))
            break
        else:
            break
    return files


def job_target(node) -> tuple[list[Path], str] | None:
    """For ``run_job("kdinv.a:function", ...)``: the module's files and the function's name."""
    import ast

    if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_job" and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        module, _, function = node.args[0].value.partition(":")
        return kdinv_files(module), function
    return None


def third_party_imports(script: Path) -> set[str]:
    """Top-level third-party modules the script imports, following kdinv modules transitively.

    Function-level imports count (they run when the job calls that function); imports under an
    ``if`` do not (e.g. start_job imports torch only when given a thread count, which the
    collection and plotting scripts do not pass). A script's job, ``run_job("kdinv.a:f", ...)``,
    counts with the module-level imports of ``kdinv.a`` and those of ``f`` (not of the module's
    other functions, the jobs of other rules).
    """
    import ast
    import sys

    seen, todo, found = set(), [(script, None)], set()
    while todo:
        path, function = todo.pop()
        if (path, function) in seen:
            continue
        seen.add((path, function))
        tree = ast.parse(path.read_text())
        if function is not None:
            tree = ast.Module(body=[n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))
                                    or n.name == function], type_ignores=[])
        for node in unconditional(tree):
            target = job_target(node)
            if target is not None:
                *files, last = target[0]
                todo.extend((f, None) for f in files)
                todo.append((last, target[1]))
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "kdinv":
                    todo.extend((f, None) for f in kdinv_files(name))
                elif top not in sys.stdlib_module_names and top not in ("snakemake", "__future__"):
                    found.add(top)
    return found


SCRIPT = re.compile(r"^\s+script:\s*\n\s+(['\"])(?P<path>[^'\"]+)\1\s*$", re.MULTILINE)
SCRIPTED_RULES = [(p, n, b) for p, n, b in ALL_RULES if SCRIPT.search(b)]


@pytest.mark.parametrize("path, name, body", SCRIPTED_RULES,
                         ids=[f"{p.stem}:{n}" for p, n, _ in SCRIPTED_RULES])
def test_rule_env_provides_its_script_imports(path, name, body):
    script = (path.parent / SCRIPT.search(body)["path"]).resolve()
    env = (path.parent / CONDA.search(body)["path"]).resolve()
    provided = set(env_pip_pins(env))
    needed = {normalise(DISTRIBUTION.get(m, m)) for m in third_party_imports(script)}
    needed |= {extra for pkg in needed for extra in IMPLIES.get(pkg, ())}
    assert needed, f"rule {name}: found no imports in {script.name}"
    assert needed <= provided, f"rule {name} ({env.name}) lacks {sorted(needed - provided)}"
