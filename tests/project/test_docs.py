"""The docs name what exists: docs/reliability.md proves each guarantee by a test's name, every page's
links reach a file and a heading, and docs/configuration.md names every setting the code reads."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# `tests/e2e/test_x.py::test_y`, `tests/x.py::Class::test_y`, or a bare `tests/x.py`; a
# following `::test_z` in the same cell refers to the file named before it.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)((?:::\w+)*)`|`::(\w+)`")


def references(doc: Path) -> list[tuple[str, list[str]]]:
    found, current = [], None
    for match in REFERENCE.finditer(doc.read_text()):
        if match.group(1):
            current = match.group(1)
            found.append((current, [name for name in match.group(2).split("::") if name]))
        else:
            assert current is not None, f"{match.group(0)} before any file in {doc.name}"
            found.append((current, [match.group(3)]))
    return found


@pytest.mark.parametrize("doc", ["docs/reliability.md", "docs/protocol.md"])
def test_every_test_a_doc_names_exists(doc):
    refs = references(ROOT / doc)
    assert refs or doc != "docs/reliability.md"
    for path, names in refs:
        source = ROOT / path
        assert source.is_file(), f"{doc} names {path}, which does not exist"
        text = source.read_text()
        for name in names:
            assert re.search(rf"^\s*(?:async\s+)?(?:def|class) {name}\b", text, re.MULTILINE), \
                f"{doc} names {path}::{name}, which does not exist"


# ---------------------------------------------------------------------------------------------
# The README and the docs link to what exists, and the settings table names every setting
# ---------------------------------------------------------------------------------------------

PAGES = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md",
         *(str(path.relative_to(ROOT)) for path in sorted((ROOT / "docs").glob("*.md")))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's ids for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES)
def test_every_link_reaches_a_file_and_its_heading(page):
    source = ROOT / page
    for target in LINK.findall(source.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # another site's
        path, _, anchor = target.partition("#")
        linked = (source.parent / path).resolve() if path else source
        assert linked.exists(), f"{page} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page} links to {target}: no such heading"


def test_the_settings_table_names_every_setting_the_code_reads():
    from tests.deploy.test_compose import DJANGO_CODE, GATEWAY_CODE, read_by

    text = (ROOT / "docs" / "configuration.md").read_text()
    table = text[text.index("\n## Settings\n"):]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    read = read_by(GATEWAY_CODE + DJANGO_CODE)
    assert read
    missing = {name: path for name, path in read.items() if name not in documented}
    assert not missing, f"read from the environment, not in docs/configuration.md's settings: {missing}"
