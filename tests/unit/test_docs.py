"""The README and docs/: every relative link resolves, the README stays short and keeps the
commands that CI and users run, and no page cites a file the repository does not have."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200
# Files that are not in the repository; a page must not send readers to them.
ABSENT = ("DECISIONS.md", "reference-code-facts")

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


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    missing = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"docs pages the README's index does not link: {missing}"
