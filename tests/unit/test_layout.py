"""The library's layout: each package's docstring names every module in it, no function of the
library is longer than a reader can take in, no Python file keeps runs of blank lines where code
was removed, and ruff passes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[2] / "workflow/scripts/kdinv"


def test_each_package_docstring_names_its_modules():
    packages = [p.parent for p in LIBRARY.rglob("__init__.py")]
    assert len(packages) >= 7
    for package in packages:
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
        names = [p.stem for p in package.glob("*.py") if p.stem != "__init__"]
        names += [p.name for p in package.iterdir() if (p / "__init__.py").exists()]
        missing = [n for n in names if not re.search(rf"\b{re.escape(n)}\b", doc)]
        assert not missing, f"{package.relative_to(LIBRARY.parent)}/__init__.py does not name {missing}"


def test_no_function_of_the_library_is_longer_than_about_80_lines():
    long = []
    for path in sorted(LIBRARY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 85:
                    long.append(f"{path.relative_to(LIBRARY)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_no_python_file_has_a_run_of_blank_lines():
    """Two blank lines separate top-level definitions (PEP 8); three or more are what a removal
    left behind."""
    root = LIBRARY.parents[2]
    files = [p for d in ("workflow", "tests", "benchmarks") for p in (root / d).rglob("*.py")]
    assert len(files) > 50
    runs = [f"{p.relative_to(root)}:{s[:m.start()].count(chr(10)) + 2}" for p in files
            for s in [p.read_text()] for m in [re.search(r"\n\n\n\n", s)] if m]
    assert not runs, runs


def test_ruff_check_passes():
    """``ruff check`` with the settings of pyproject.toml (its rules and line length), over the
    whole repository, as a contributor runs it before a commit."""
    import subprocess
    import sys

    root = LIBRARY.parents[2]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(root)], cwd=root,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
