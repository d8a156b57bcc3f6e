"""The documentation stands on its own: every relative link in the README and docs/ points at a file of this
repository, nothing points outside it (the protocol once lived in ../shared/SPEC.md), and the README stays a
way in rather than the manual."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_resolves_inside_the_repository() -> None:
    broken = []
    for doc in _docs():
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_no_document_points_outside_the_repository() -> None:
    assert [d.name for d in _docs() if "shared/SPEC.md" in d.read_text()] == []


def test_the_readme_is_a_way_in() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    for needed in ("make demo", "make test", "docs/protocol.md", "## Documentation"):
        assert needed in text
