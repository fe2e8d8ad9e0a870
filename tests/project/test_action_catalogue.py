"""The action registry (workers/actions.py) against its tests and its documentation: an action
declared without a test of its own, or docs/protocol.md naming an action the registry lacks (or
the other way round), fails here."""

from __future__ import annotations

import re
from pathlib import Path

from websockets_gateway.protocol import ANONYMOUS_ACTIONS, GATEWAY_ERROR_CODES
from workers.actions import GATEWAY_ACTIONS, registry

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PROTOCOL = ROOT / "docs" / "protocol.md"
# `@pytest.mark.action("name")` on a test, a class or a module (pytestmark).
ACTION_MARK = re.compile(r"""mark\.action\(\s*["']([a-z][a-z0-9_]*)["']\s*\)""")


def marked_actions() -> dict[str, set[Path]]:
    found: dict[str, set[Path]] = {}
    for path in TESTS.rglob("test_*.py"):
        if path == Path(__file__).resolve():
            continue
        for name in ACTION_MARK.findall(path.read_text()):
            found.setdefault(name, set()).add(path.relative_to(ROOT))
    return found


def section(text: str, heading: str) -> str:
    """The body of the `## heading` section of a Markdown document."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"no section '## {heading}'"
    return match.group(1)


def documented_actions() -> set[str]:
    """The actions docs/protocol.md gives a `### name — frame` entry under "## Actions"."""
    headings = re.findall(r"^### (.+?) — ", section(PROTOCOL.read_text(), "Actions"), re.M)
    return {name.strip() for heading in headings for name in heading.split("/")}


def documented_error_codes() -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)` \|", section(PROTOCOL.read_text(), "Replies"), re.M))


def product_actions() -> set[str]:
    """The actions the chat declares (not a test app's), and the gateway's own."""
    return {action.name for action in registry if not action.module.startswith("tests.")} | GATEWAY_ACTIONS


def test_every_action_has_a_test_of_its_own():
    marked = marked_actions()
    missing = sorted(action.name for action in registry if action.name not in marked)
    assert not missing, f"actions without a test marked @pytest.mark.action(NAME): {missing}"


def test_every_action_mark_names_a_declared_action():
    stale = {name: sorted(map(str, paths)) for name, paths in marked_actions().items() if name not in registry}
    assert not stale, f"tests marked for actions the registry lacks: {stale}"


def test_docs_protocol_names_exactly_the_registrys_actions():
    documented, declared = documented_actions(), product_actions()
    assert documented - declared == set(), "docs/protocol.md names actions the registry lacks"
    assert declared - documented == set(), "actions declared but not in docs/protocol.md's Actions"


def test_docs_protocol_lists_exactly_the_error_codes_answered():
    assert documented_error_codes() == registry.error_codes() | GATEWAY_ERROR_CODES


def test_the_gateways_own_actions_are_not_the_workers():
    assert GATEWAY_ACTIONS <= ANONYMOUS_ACTIONS
    assert not any(name in registry for name in GATEWAY_ACTIONS)


def test_the_checks_see_what_they_check():
    # Guards against a parser that finds nothing and so passes everything.
    assert {"new_message", "sync", "ping"} <= documented_actions()
    assert {"invalid_room_id", "timeout"} <= documented_error_codes()
    assert "echo" in marked_actions() and "echo" in registry and "echo" not in product_actions()
