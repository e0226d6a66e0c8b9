"""The README and docs/: every relative link resolves, the README stays short and keeps the
commands that CI and users run, and no page, docstring or comment cites a document the repository
does not have."""

from __future__ import annotations

import functools
import io
import re
import tokenize
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks/README.md"]
README_MAX_LINES = 200
# Documents that are not in the repository; no page, docstring or comment may send readers to them.
ABSENT = ("DECISIONS.md", "BEYOND.md", "STYLE.md", "reference-code-facts",
          "kd-symmetry-invariances.txt")
# Where docstrings and comments are: the folders and top-level files of code and configuration.
SOURCE_DIRS = ("workflow", "rules", "tests", "benchmarks", "profiles", "envs", ".ci")
SOURCE_SUFFIXES = {".py", ".smk", ".yaml", ".yml", ".sh", ".toml"}

FENCE = re.compile(r"^\s*(```|~~~)")
# [text](target) and ![alt](target), target without spaces, optional "title"
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`+[^`]*`+")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown page outside fenced and indented code blocks."""
    out, fenced, previous_blank = [], False, True
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            out.append("")
            continue
        indented = line.startswith("    ") and previous_blank
        if fenced or indented:
            out.append("")
            previous_blank = previous_blank if indented else False
            continue
        out.append(line)
        previous_blank = not line.strip()
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the text without link syntax and punctuation, lower case,
    spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``page`` (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(page.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def links(page: Path) -> list[str]:
    targets = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        targets += LINK.findall(CODE_SPAN.sub("", line))
    return targets


def test_the_helpers_read_markdown_as_github_does(tmp_path):
    assert slug("Beyond the paper: distillation recipes") == "beyond-the-paper-distillation-recipes"
    assert slug("What the config check refuses") == "what-the-config-check-refuses"
    assert slug("Metrics (paper §3.4)") == "metrics-paper-34"
    assert slug("`kdinv` and [docs](docs/x.md)") == "kdinv-and-docs"
    page = tmp_path / "p.md"
    page.write_text(
        "# A\n\n## A\n\n    [not](a-link.md)\n\n```\n# not a heading\n[no](link.md)\n```\n"
        "See [b](b.md#x) and ![i](i.png \"t\") but not `[c](c.md)`.\n",
        encoding="utf-8",
    )
    assert anchors(page) == {"a", "a-1"}
    assert links(page) == ["b.md#x", "i.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.exists():
            shown = dest.relative_to(ROOT) if ROOT in dest.parents else dest
            broken.append(f"{target}: {shown} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading of {dest.name} has the anchor #{anchor}")
        elif anchor and dest.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_cites_a_file_the_repository_lacks(page):
    text = page.read_text(encoding="utf-8")
    assert not [name for name in ABSENT if name in text]
    assert not [path for path in REPO_PATH.findall(text) if not (ROOT / path).exists()]


def test_readme_stays_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, (
        f"README.md has {len(lines)} lines; move reference material to docs/"
    )


def test_readme_keeps_the_commands_ci_and_users_run():
    """CI (.ci/run) runs the README's test command verbatim; the demo command is the quick start."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci.startswith("python3.11 -m venv .venv")
    assert f"    {ci}\n" in readme
    demo = ("python3.11 -m venv .venv && .venv/bin/pip install -q -r requirements.txt && "
            ".venv/bin/snakemake --cores 2 --configfile config.demo.yaml")
    assert f"    {demo}\n" in readme


# Figures that are measured rather than chosen: durations and counts of decided verdicts.
MEASURED = re.compile(
    r"\b\d+(?:\.\d+)? ?(?:min(?: \d+ s)?|s|seconds?|minutes?|hours?|GPU-(?:minutes|hours))\b"
    r"|\b\d+ of (?:the )?\d+\b"
)


def test_measured_figures_are_found_in_prose():
    text = "took 4 min 16 s, then 8 minutes; 27 s and 1.5 s; 16 of the 20; 10 GPU-minutes; T = 4"
    assert MEASURED.findall(text) == [
        "4 min 16 s", "8 minutes", "27 s", "1.5 s", "16 of the 20", "10 GPU-minutes",
    ]


def test_every_measured_figure_of_the_readme_is_on_the_measurements_page():
    """docs/measurements.md is the one home of measured figures: a time or a count of decided
    verdicts that the README states must be there too, so that re-measuring the page and
    forgetting the README (or the reverse) fails here."""
    readme = " ".join(" ".join(prose_lines((ROOT / "README.md").read_text(encoding="utf-8"))).split())
    page = " ".join((ROOT / "docs/measurements.md").read_text(encoding="utf-8").split())
    figures = MEASURED.findall(readme)
    assert figures, "the README states no measured figure; drop this test or the regex"
    assert not [f for f in figures if f not in page], (
        f"README figures missing from docs/measurements.md: {[f for f in figures if f not in page]}"
    )


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    missing = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"docs pages the README's index does not link: {missing}"


# --------------------------------------------------------------------------------------------
# Docstrings and comments cite only documents the repository has
# --------------------------------------------------------------------------------------------

# docs/<page>.md, optionally with #anchor, or followed by a quoted section name:
# docs/method.md#the-findings, (docs/method.md, "The teacher gate"), docs/running.md ("The GPU")
DOC_REF = re.compile(r'(docs/[\w/.-]+?\.md)(?:#([\w-]+))?(?:[,:]?\s*\(?"([^"\n]{3,80})")?')
CAPS_DOC = re.compile(r"\b([A-Z][A-Z0-9_-]{2,}\.md)\b")  # README.md and the like
# A file of the repository by its path from the root: tests/unit/symmetry/test_frames.py
REPO_PATH = re.compile(
    r"(?<![\w/.<>-])((?:tests|workflow|benchmarks|rules|profiles|envs)/[\w/.-]+\.(?:py|smk|yaml|sh))\b"
)


def source_files() -> list[Path]:
    files = [ROOT / "Snakefile", ROOT / "pyproject.toml", *sorted(ROOT.glob("config*.yaml"))]
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in SOURCE_SUFFIXES or path.name in ("run", "Snakefile"):
                files.append(path)
    return files


def source_prose(path: Path) -> str:
    """The docstrings and comments of ``path``, whitespace collapsed. Python and Snakemake files
    (tokenized as Python): comments and strings that stand as statements of their own (module,
    class, function and rule docstrings). YAML, TOML and shell files: the whole text (comments,
    and a schema's descriptions)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix not in (".py", ".smk") and path.name != "Snakefile":
        return " ".join(text.split())
    parts, previous = [], tokenize.NEWLINE
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            parts.append(tok.string.lstrip("#"))
        elif tok.type == tokenize.STRING and previous in (
            tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT,
        ):
            parts.append(tok.string)
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            previous = tok.type
    return " ".join(" ".join(parts).split())


@functools.cache
def markdown_names() -> frozenset[str]:
    """The names of the repository's Markdown files (one walk of the tree, not one per file
    scanned: the tree holds the virtualenv too)."""
    return frozenset(p.name for p in ROOT.rglob("*.md") if ".git" not in p.parts)


def missing_documents(prose: str) -> list[str]:
    """What ``prose`` cites that the repository lacks: a name of ABSENT, an upper-case ``*.md``
    file that is nowhere in the repository, a ``docs/`` page that does not exist, or an anchor or
    quoted section name that no heading of the page has."""
    problems = [f"{name} (not in the repository)" for name in ABSENT if name in prose]
    caps_docs = markdown_names()
    problems += [f"{name} (no such file)" for name in sorted(set(CAPS_DOC.findall(prose)))
                 if name not in caps_docs and name not in ABSENT]
    problems += [f"{path} (no such file)" for path in sorted(set(REPO_PATH.findall(prose)))
                 if not (ROOT / path).exists()]
    for page, anchor, section in DOC_REF.findall(prose):
        dest = ROOT / page
        if not dest.is_file():
            problems.append(f"{page} (no such page)")
        elif anchor and anchor not in anchors(dest):
            problems.append(f"{page}#{anchor} (no such heading)")
        elif section and slug(section) not in anchors(dest):
            problems.append(f'{page}, "{section}" (no such heading)')
    return problems


def test_the_source_scan_finds_docstrings_comments_and_cited_documents(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        '"""Module docstring (BEYOND.md)."""\n'
        "import os  # see docs/method.md#no-such-anchor\n"
        "x = 'NOT_A_DOCSTRING.md'\n"
        "def f():\n"
        '    """docs/method.md, "The teacher\n    gate" and docs/nowhere.md."""\n'
        "    return x\n",
        encoding="utf-8",
    )
    prose = source_prose(module)
    assert "NOT_A_DOCSTRING" not in prose and "Module docstring" in prose
    assert missing_documents(prose) == [
        "BEYOND.md (not in the repository)",
        "docs/method.md#no-such-anchor (no such heading)",
        "docs/nowhere.md (no such page)",
    ]
    assert missing_documents('docs/method.md, "Metrics (paper §3.4)"; README.md; UNKNOWN.md') == [
        "UNKNOWN.md (no such file)"
    ]
    assert missing_documents("tests/unit/test_docs.py, tests/unit/test_frames.py, tests/unit/<package>/x.py") == [
        "tests/unit/test_frames.py (no such file)"
    ]
    smk = tmp_path / "r.smk"
    smk.write_text('rule a:\n    """Rule docstring."""\n    output: "x"  # a comment\n')
    assert source_prose(smk) == '"""Rule docstring.""" a comment'


def test_no_docstring_or_comment_cites_a_document_the_repository_lacks():
    files = source_files()
    assert ROOT / "workflow/scripts/kdinv/distill/recipes.py" in files
    assert ROOT / "rules/common.smk" in files
    problems = [f"{path.relative_to(ROOT)}: {problem}"
                for path in files for problem in missing_documents(source_prose(path))]
    assert not problems, "\n".join(problems)
