"""The project's written documentation as tests read it: README.md, every page under docs/ and the
experiment records' README (the docs site's pages, mkdocs.yml).

Each fact lives on one page; a test asks for a section by its title or for every command of a
kind, wherever the section or the command lives now, so moving text between pages keeps it tested."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), REPO / "experiments" / "README.md"]
SHELL = ("", "bash", "sh")  # the languages of the code blocks that hold commands


def text() -> str:
    """Every page, one after another."""
    return "\n\n".join(page.read_text() for page in PAGES)


def section(title: str) -> str:
    """The section headed `# <title>` or `## <title>` (exactly one, on any page), up to the next
    heading of its level or above."""
    found = []
    for page in PAGES:
        for match in re.finditer(rf"^(#{{1,2}}) {re.escape(title)}\n", page.read_text(), re.M):
            rest = page.read_text()[match.end() :]
            end = re.search(rf"^#{{1,{len(match.group(1))}}} ", rest, re.M)
            found.append((page.relative_to(REPO), rest[: end.start()] if end else rest))
    assert len(found) == 1, (
        f"'{title}': {len(found)} sections of that title in README.md and docs/ {[p for p, _ in found]}"
    )
    return found[0][1]


def blocks() -> list[tuple[Path, str]]:
    """Every shell code block of every page (a fence with no language, bash or sh; indented in a
    list too), with its page."""
    found, language, lines = [], None, []
    for page in PAGES:
        for line in page.read_text().splitlines():
            fence = re.match(r"\s*```(\w*)\s*$", line)
            if fence and language is None:
                language, lines = fence.group(1), []
            elif fence:
                if language in SHELL:
                    found.append((page, "\n".join(lines)))
                language = None
            elif language is not None:
                lines.append(line)
    return found


def commands(prefix: str) -> list[str]:
    """Every command line of the pages' shell blocks that starts with `prefix`, its `  #` comment cut."""
    lines = [line.split("  #")[0].strip() for _, block in blocks() for line in block.splitlines()]
    return [line for line in lines if line.startswith(prefix)]
