"""Every citation in the repository points at a document of the repository, at a section it has."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The original design file's name, built from parts so that this file does not match itself.
_NAME = "DES" + "IGN"
FORBIDDEN = (_NAME + " §", _NAME + ".md")
CITATION = re.compile(r"docs/(?P<doc>[A-Za-z0-9_.-]+?)\.md §(?P<section>\d+)")


@cache
def repo_files() -> tuple[Path, ...]:
    """Tracked files, and new ones not ignored, as paths under the repository root."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    names = sorted({name for name in listing.decode().split("\0") if name})
    return tuple(ROOT / name for name in names if (ROOT / name).is_file())


@cache
def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    return data.decode("utf-8", errors="replace")


@cache
def sections_of(doc: str) -> frozenset[str]:
    """The numbers of the "## N." headings of docs/<doc>.md (empty when there is no such doc)."""
    path = ROOT / "docs" / f"{doc}.md"
    if not path.is_file():
        return frozenset()
    return frozenset(re.findall(r"^## (\d+)\.", path.read_text(), flags=re.MULTILINE))


def test_no_reference_to_the_design_outside_the_repository() -> None:
    """No file cites the original design document, which is not part of the repository."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in repo_files()
        if (text := text_of(path)) is not None
        for number, line in enumerate(text.splitlines(), start=1)
        if any(word in line for word in FORBIDDEN)
    ]
    assert not found, "cite docs/architecture.md instead:\n" + "\n".join(found)


def test_every_section_citation_names_an_existing_section() -> None:
    """Every "docs/<name>.md §N" names a doc that exists and has a "## N." heading."""
    cited = 0
    broken = []
    for path in repo_files():
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for match in CITATION.finditer(line):
                cited += 1
                if match["section"] not in sections_of(match["doc"]):
                    broken.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)}")
    assert cited > 0, "no section citations found: the pattern or the file listing is wrong"
    assert not broken, "citations of missing docs or sections:\n" + "\n".join(broken)


def test_architecture_sections_are_numbered_in_order() -> None:
    """docs/architecture.md has sections 1 to 12, in order, so "§N" keeps its meaning."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    numbers = [int(n) for n in re.findall(r"^## (\d+)\.", text, flags=re.MULTILINE)]
    assert numbers == list(range(1, 13))
