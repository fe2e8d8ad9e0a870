"""The gateway process's id: a slot per live process, taken again by the next process after it ends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from websockets_gateway import identity
from websockets_gateway.identity import claim_gateway_id, claim_slot, default_base
from websockets_gateway.settings import GatewaySettings, SettingsError


def test_live_slots_are_never_shared_and_a_freed_one_is_taken_again(tmp_path):
    first, second = claim_slot("gw", str(tmp_path)), claim_slot("gw", str(tmp_path))
    assert (first.index, second.index) == (0, 1)
    assert claim_slot("other", str(tmp_path)).index == 0  # another name, slots of its own
    first.release()
    third = claim_slot("gw", str(tmp_path))
    assert third.index == 0
    assert claim_slot("gw", str(tmp_path)).index == 2


def test_a_slot_held_by_another_process_is_free_once_it_is_killed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from websockets_gateway.identity import claim_slot; "
         f"slot = claim_slot('gw', {str(tmp_path)!r}); print(slot.index, flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert holder.stdout.readline().strip() == "0"
        assert claim_slot("gw", str(tmp_path)).index == 1
    finally:
        holder.kill()  # no clean-up of its own: the kernel drops the lock
        holder.wait(timeout=10)
    assert claim_slot("gw", str(tmp_path)).index == 0


def test_the_id_is_the_configured_name_or_the_host_name_and_the_slot(tmp_path):
    gateway_id, slot = claim_gateway_id("chat-eu", str(tmp_path))
    assert gateway_id == "chat-eu-0"
    gateway_id, _ = claim_gateway_id(None, str(tmp_path))
    assert gateway_id == f"{default_base()}-0"
    slot.release()


def test_with_no_lockable_slot_the_id_falls_back_to_the_process_id(tmp_path, caplog):
    gateway_id, slot = claim_gateway_id("gw", str(tmp_path / "missing"))
    assert (gateway_id, slot) == (f"gw-pid{os.getpid()}", None)
    assert "no gateway slot could be locked" in caplog.text


def test_all_slots_held_is_an_error(tmp_path):
    held = [claim_slot("gw", str(tmp_path), max_slots=2) for _ in range(2)]
    with pytest.raises(OSError, match="all 2 gateway slots"):
        claim_slot("gw", str(tmp_path), max_slots=2)
    assert [slot.index for slot in held] == [0, 1]


def test_the_host_name_is_reduced_to_what_an_id_may_hold(monkeypatch):
    monkeypatch.setattr(identity.socket, "gethostname", lambda: "web 01:eu/west")
    assert default_base() == "web-01-eu-west"


def test_gateway_id_setting():
    assert GatewaySettings.from_env({}).gateway_id is None
    assert GatewaySettings.from_env({"GATEWAY_ID": "chat-eu.1_a"}).gateway_id == "chat-eu.1_a"
    for bad in ("gw:1", "-gw", "a" * 64, "gw/1"):
        with pytest.raises(SettingsError, match="GATEWAY_ID="):
            GatewaySettings.from_env({"GATEWAY_ID": bad})
