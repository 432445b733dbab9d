"""Documents resolve: what the code cites and what the docs link to is in the repository.

A comment, docstring or string in ``worker/``, ``devnet/``, ``bench/`` or ``tests/`` that names a
Markdown file must name one of the repository: looked up from the root, from ``docs/`` and from the
citing file's own folder. Facts taken from the reference project cite its source files by name
instead. The relative links of README.md, CONTRIBUTING.md, CHANGELOG.md and ``docs/*.md`` must point
at files that exist. Pure file reading: no service.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("worker", "devnet", "bench", "tests")
SKIPPED = (ROOT / "devnet" / "npm" / "node_modules",)
LINKING_DOCS = ("README.md", "CONTRIBUTING.md", "CHANGELOG.md")

# A file name ending in .md, not inside a URL (no path or scheme character right before it).
_CITED = re.compile(r"(?<![\w./:-])([\w./-]*[\w-]\.md)\b")
# Inline links and images ``[text](target "title")``, and reference definitions ``[label]: target``.
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def cited_documents(text: str) -> Iterator[tuple[int, str]]:
    """(line, name) of every Markdown file ``text`` names."""
    for match in _CITED.finditer(text):
        yield text.count("\n", 0, match.start()) + 1, match.group(1)


def document_exists(name: str, folder: Path) -> bool:
    return any((base / name).is_file() for base in (ROOT, ROOT / "docs", folder))


def missing_citations(text: str, folder: Path) -> list[tuple[int, str]]:
    return [(line, name) for line, name in cited_documents(text) if not document_exists(name, folder)]


def relative_links(markdown: str) -> Iterator[str]:
    """Targets of the links of ``markdown`` that point inside the repository, without their anchor."""
    prose = _INLINE_CODE.sub("", _FENCE.sub("", markdown))
    for pattern in (_INLINE_LINK, _REFERENCE_LINK):
        for match in pattern.finditer(prose):
            target = match.group(1)
            if _SCHEME.match(target) or target.startswith("#"):
                continue
            yield target.split("#", 1)[0]


def broken_links(markdown: str, folder: Path) -> list[str]:
    return [target for target in relative_links(markdown) if not (folder / target).exists()]


def _sources() -> Iterator[Path]:
    for top in SOURCE_FOLDERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            if not any(path.is_relative_to(skipped) for skipped in SKIPPED):
                yield path


def _linking_docs() -> list[Path]:
    return [ROOT / name for name in LINKING_DOCS] + sorted((ROOT / "docs").glob("*.md"))


def test_every_document_the_code_cites_is_in_the_repository() -> None:
    missing = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in _sources()
        for line, name in missing_citations(path.read_text(encoding="utf-8"), path.parent)
    ]
    assert not missing, (
        "documents cited but not in the repository (cite a file of docs/, or the reference project's"
        " source file by name):\n" + "\n".join(missing)
    )


@pytest.mark.parametrize("doc", _linking_docs(), ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_of_the_docs_resolve(doc: Path) -> None:
    assert doc.is_file(), f"{doc.relative_to(ROOT)} is missing"
    broken = broken_links(doc.read_text(encoding="utf-8"), doc.parent)
    assert not broken, f"{doc.relative_to(ROOT)} links to missing files: {broken}"


# The checks themselves: each must catch what it is there to catch. The missing name is assembled
# so that this file does not cite it.
_ABSENT = "nowhere-in-this-repo" + ".md"


def test_a_citation_of_an_absent_document_is_caught() -> None:
    text = f'"""Formulas: {_ABSENT} §5.\n\nSee docs/architecture.md and README.md."""\n'
    assert missing_citations(text, ROOT / "worker") == [(1, _ABSENT)]


def test_a_document_of_the_citing_folder_or_of_docs_resolves() -> None:
    assert missing_citations("devnet.md, replicate-states.md", ROOT / "worker") == []
    assert missing_citations(f"https://example.org/{_ABSENT}", ROOT / "worker") == []


def test_a_broken_relative_link_is_caught() -> None:
    markdown = (
        f"[gone]({_ABSENT}#part) [up](architecture.md#layers) [web](https://example.org/{_ABSENT})\n"
        f"[anchor](#layers)\n\n[ref]: ../{_ABSENT}\n\n```\n[in code]({_ABSENT})\n```\n"
    )
    assert broken_links(markdown, ROOT / "docs") == [_ABSENT, f"../{_ABSENT}"]


def test_every_row_of_the_security_table_names_tests_that_exist() -> None:
    """docs/security.md: one row per attack, each naming its tests as path::name; each must be a test."""
    text = (ROOT / "docs" / "security.md").read_text()
    table = text.split("## Attack → defence → test", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| attack")]
    rows = [row for row in rows if not set(row) <= set("|- ")]
    assert len(rows) >= 10
    for row in rows:
        cited = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row.rsplit("|", 2)[-2])
        assert cited, f"a row of docs/security.md names no test: {row[:80]}"
        for path, name in cited:
            source = (ROOT / path).read_text()
            assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{path}::{name} does not exist"
