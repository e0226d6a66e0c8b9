"""Run a command as if only requirements.txt were installed.

The test requirements bring packages of their own (pytest brings pygments, for one) that can hide
a runtime dependency the README's commands need. :func:`runtime_only_env` returns an environment
whose Python refuses to import any module of a distribution that only requirements-test.txt
installs (a ``sitecustomize`` meta-path hook), so a command run with it fails exactly where it
would fail in a virtualenv made from requirements.txt alone.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _names(path: Path) -> list[str]:
    names = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-r"):
            names.append(Requirement(line).name)
    return names


def _closure(names) -> set[str]:
    """The distributions ``names`` install, with every dependency (markers evaluated here)."""
    seen, todo = set(), list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def only_in_test_requirements() -> set[str]:
    runtime = _closure(_names(ROOT / "requirements.txt"))
    everything = _closure(_names(ROOT / "requirements-test.txt") + _names(ROOT / "requirements.txt"))
    return everything - runtime


def modules_of_test_requirements() -> set[str]:
    dists = only_in_test_requirements()
    return {module for module, owners in md.packages_distributions().items()
            if all(re.sub(r"[-_.]+", "-", o).lower() in dists for o in owners)}


HOOK = '''
import sys
BLOCKED = {blocked!r}
class _TestOnly:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (installed by requirements-test.txt only)")
        return None
sys.meta_path.insert(0, _TestOnly())
'''


def runtime_only_env(tmp: Path) -> dict[str, str]:
    """os.environ plus a sitecustomize that blocks the test-only modules."""
    site = tmp / "runtime-only-site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(HOOK.format(blocked=sorted(modules_of_test_requirements())))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
