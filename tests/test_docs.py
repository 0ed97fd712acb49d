"""The README and docs/ stand alone: every relative link names a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_docs_link_nothing_outside_the_repository() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 1
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "../shared" not in text, page
        for target in LINK.findall(text):
            if re.match(r"[a-z]+://", target):
                continue  # a public URL (the providers' documentation)
            path = (page.parent / target).resolve()
            assert path.is_relative_to(ROOT), f"{page.name} links {target}, outside the repo"
            assert path.exists(), f"{page.name} links {target}, which does not exist"
