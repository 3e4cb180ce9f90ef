"""The README and the docs agree where they repeat each other, and the README's links resolve.

`mkdocs build --strict` (run by .ci/run) checks the links inside docs/; the README sits outside the
site, so its links into docs/ are checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```\w*\n(.*?)^```", flags=re.S | re.M)


def fenced_blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text(encoding="utf-8"))


def test_the_readme_starts_with_the_two_set_up_commands():
    install, tests = fenced_blocks(ROOT / "README.md")[:2]
    assert install.startswith("$(command -v sudo) apt-get") and install.rstrip().endswith(".venv/bin/clbench run")
    assert tests == ".venv/bin/python -m pytest -n 2\n"
    # CI runs exactly that command
    assert '"$workdir/venv/bin/python" -m pytest -n 2\n' in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_getting_started_shows_the_readme_commands_and_output():
    # the two set-up commands and the default run's output, byte for byte in both places
    assert fenced_blocks(ROOT / "docs" / "getting-started.md")[:3] == fenced_blocks(ROOT / "README.md")[:3]


def slug(heading: str) -> str:
    """A heading's anchor as GitHub and MkDocs both make it for plain headings."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_the_readme_links_resolve():
    text = FENCE.sub("", (ROOT / "README.md").read_text(encoding="utf-8"))
    links = [link for link in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", link)]
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        target, _, anchor = link.partition("#")
        path = ROOT / target
        assert path.is_file(), f"README.md links to {link}, which does not exist"
        if anchor:
            assert anchor in anchors(path), f"README.md links to {link}, but {target} has no heading with that anchor"


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages and {page for page in pages if f": {page}" not in nav} == set()
