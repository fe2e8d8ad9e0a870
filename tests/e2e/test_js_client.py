"""chat-client.js as a package (chat/static/chat/package.json) under Node's own test runner
(tests/js/), against the real gateway and workers; skipped where there is no Node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from scripts.stack import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NODE = shutil.which("node")


def websocket_flag() -> list[str]:
    """Node 22 has a WebSocket of its own; Node 20 behind a flag."""
    has_it = subprocess.run([NODE, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                            capture_output=True, timeout=30).returncode == 0
    return [] if has_it else ["--experimental-websocket"]


@pytest.mark.skipif(NODE is None, reason="no node on the PATH (the Debian package nodejs)")
def test_the_client_package_passes_its_own_tests_against_the_real_stack(e2e):
    data = e2e.fixtures(users=2, rooms=1, room_size=2)
    alice, bob = data["users"]
    env = dict(os.environ, CHAT_WS_URL_A=e2e.gateway_a.replace("http://", "ws://"),
               CHAT_WS_URL_B=e2e.gateway_b.replace("http://", "ws://"), CHAT_TOKEN_A=alice["token"],
               CHAT_TOKEN_B=bob["token"], CHAT_USER_A=alice["username"], CHAT_ROOM=data["rooms"][0]["id"])
    result = subprocess.run([NODE, *websocket_flag(), "--test", "tests/js/"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The real-stack test ran (it is skipped without the addresses), and every test passed.
    assert "# fail 0" in result.stdout and "# skipped 0" in result.stdout, result.stdout[-3000:]


def test_the_package_names_the_client_as_its_module():
    package = json.loads((ROOT / "chat" / "static" / "chat" / "package.json").read_text())
    assert package["type"] == "module" and package["exports"] == {".": "./chat-client.js"}
    assert package["files"] == ["chat-client.js"] and package["license"] == "BSD-3-Clause"
    assert (ROOT / "chat" / "static" / "chat" / package["main"]).is_file()
