"""mkdocs hook: the site's pages are this repository's Markdown files as GitHub shows them.

The home page is README.md itself (docs/index.md only points at it) and the experiment records
page is experiments/README.md, so neither is written twice. Every relative link is written as it
resolves in the repository (README.md links `docs/protocol.md`, a docs page links
`../experiments/README.md`); here each becomes the site's page for that file, or, for a file the
site does not hold (LICENSE), its page in the repository. mkdocs then checks every link and anchor.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# Repository files the site shows as a page of its own: file -> page.
PAGES = {ROOT / "README.md": "index.md", ROOT / "experiments" / "README.md": "experiments.md"}
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")


def on_page_markdown(markdown: str, page, config, files) -> str:
    source = Path(page.file.abs_src_path)
    for file, name in PAGES.items():
        if page.file.src_uri == name:
            markdown, source = file.read_text(), file
    where = DOCS / Path(page.file.src_uri).parent
    return LINK.sub(
        lambda m: m[1] + _target(m[2], source=source, where=where, config=config) + (m[3] or "") + m[4], markdown
    )


def _target(link: str, *, source: Path, where: Path, config) -> str:
    """The site's link for `link`, written in `source`, on a page rendered from `where`."""
    if re.match(r"[a-z]+:", link) or link.startswith("/"):  # https:, mailto:; mkdocs judges `/...` links
        return link
    file = (source.parent / link).resolve()
    if not file.exists() or not file.is_relative_to(ROOT):
        return link  # mkdocs reports it as not found
    file = DOCS / PAGES[file] if file in PAGES else file
    if file.is_relative_to(DOCS):
        return os.path.relpath(file, where)
    return f"{config.repo_url.rstrip('/')}/blob/main/{file.relative_to(ROOT).as_posix()}"
