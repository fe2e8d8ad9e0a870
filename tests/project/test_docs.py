"""The docs name tests that exist: docs/reliability.md proves each guarantee by a test's name."""

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
