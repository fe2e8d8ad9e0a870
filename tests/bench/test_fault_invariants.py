"""The fault run's invariants on hand-made logs: a clean run passes, and each way of breaking an
invariant is caught under its own kind."""

from __future__ import annotations

from typing import Any

from bench.fault_invariants import (ClientLog, Event, StoredMessage, check_all, check_no_leaks, check_replies,
                                      check_stored_once, check_sync_complete, tally)

ROOM_A = "a" * 32
ROOM_B = "b" * 32
ROOM_C = "c" * 32  # nobody's in these tests but as a leak


def sent(conn: int, uuid: str, action: str = "new_message") -> Event:
    return Event("sent", conn, {"uuid": uuid, "action": action})


def recv(conn: int, frame: dict[str, Any]) -> Event:
    return Event("recv", conn, frame)


def message(message_id: int, room: str, username: str) -> dict[str, Any]:
    return {"id": message_id, "room": room, "user": {"username": username}}


def ack(uuid: str, message_id: int, room: str, username: str) -> dict[str, Any]:
    return {"uuid": uuid, "action": "new_message", "status": "success", "room": room,
            "message": message(message_id, room, username)}


def error(uuid: str, code: str = "timeout", action: str = "new_message") -> dict[str, Any]:
    return {"uuid": uuid, "action": action, "status": "error", "error_code": code}


def clean_run() -> tuple[list[ClientLog], list[StoredMessage]]:
    """Alice (c0, rooms A and B) sends c0-2 (timed out, retried after a 1001 on a second
    connection) and c0-3; bob (c1, room A) sees c0-2's broadcast and answers a resync."""
    alice = ClientLog("c0", "alice", frozenset({ROOM_A, ROOM_B}), [
        Event("open", 1),
        sent(1, "c0-1", "authenticate"), recv(1, {"uuid": "c0-1", "action": "authenticate", "status": "success"}),
        sent(1, "c0-2"), recv(1, error("c0-2")),
        sent(1, "c0-2"),  # retried; the gateway restarts before answering
        Event("close", 1, code=1001, by_server=True),
        Event("open", 2),
        sent(2, "c0-4", "authenticate"), recv(2, {"uuid": "c0-4", "action": "authenticate", "status": "success"}),
        sent(2, "c0-2"),
        # The first attempt's late broadcast, then the retry's reply: two success copies, two attempts.
        recv(2, ack("c0-2", 10, ROOM_A, "alice")), recv(2, ack("c0-2", 10, ROOM_A, "alice")),
        sent(2, "c0-3"), recv(2, ack("c0-3", 11, ROOM_B, "alice")),
        sent(2, "c0-5", "sync"),
        recv(2, {"uuid": "c0-5", "action": "sync", "status": "success", "has_more": False,
                 "messages": [{"id": 10, "room": ROOM_A}, {"id": 11, "room": ROOM_B}]}),
    ], final_sync=[{"id": 10, "room": ROOM_A}, {"id": 11, "room": ROOM_B}, {"id": 12, "room": ROOM_A}])
    bob = ClientLog("c1", "bob", frozenset({ROOM_A}), [
        Event("open", 1),
        sent(1, "c1-1", "authenticate"), recv(1, {"uuid": "c1-1", "action": "authenticate", "status": "success"}),
        recv(1, ack("c0-2", 10, ROOM_A, "alice")),
        recv(1, {"action": "resync", "reason": "bus gap"}),
        sent(1, "c1-2", "sync"), recv(1, {"uuid": "c1-2", "action": "sync", "status": "success", "has_more": False,
                                          "messages": []}),
        sent(1, "c1-3"),  # sent as the gateway shut down: closed with 1001, no reply
        Event("close", 1, code=1001, by_server=True),
    ], final_sync=[{"id": 10, "room": ROOM_A}, {"id": 12, "room": ROOM_A}])
    stored = [StoredMessage(10, "alice", ROOM_A, "c0-2"), StoredMessage(11, "alice", ROOM_B, "c0-3"),
              StoredMessage(12, "bob", ROOM_A, "c1-3")]
    return [alice, bob], stored


def test_a_clean_run_passes_every_invariant():
    logs, stored = clean_run()
    assert check_all(logs, stored) == []
    assert tally([]) == {"lost": 0, "duplicated": 0, "leaked": 0, "unanswered": 0, "unexpected": 0}


def test_an_acknowledged_message_not_stored_is_lost():
    logs, stored = clean_run()
    violations = check_stored_once(logs, [row for row in stored if row.id != 11])
    assert [(v.kind, v.client) for v in violations] == [("lost", "c0")]
    assert "c0-3" in violations[0].detail


def test_a_message_stored_twice_is_duplicated():
    logs, stored = clean_run()
    violations = check_stored_once(logs, stored + [StoredMessage(13, "alice", ROOM_A, "c0-2")])
    assert [v.kind for v in violations] == ["duplicated"]


def test_an_acknowledgement_with_another_id_than_the_stored_one_is_caught():
    logs, stored = clean_run()
    stored = [StoredMessage(99, "alice", ROOM_B, "c0-3") if row.id == 11 else row for row in stored]
    assert [v.kind for v in check_stored_once(logs, stored)] == ["duplicated"]


def test_the_same_uuid_of_another_user_is_not_the_senders_row():
    logs, stored = clean_run()
    stored = [StoredMessage(11, "bob", ROOM_B, "c0-3") if row.id == 11 else row for row in stored]
    assert [v.kind for v in check_stored_once(logs, stored)] == ["lost"]


def test_a_final_sync_that_misses_a_message_of_its_rooms_is_lost():
    logs, stored = clean_run()
    logs[1].final_sync = [{"id": 10, "room": ROOM_A}]
    violations = check_sync_complete(logs, stored)
    assert [(v.kind, v.client) for v in violations] == [("lost", "c1")]
    assert "12" in violations[0].detail


def test_a_final_sync_with_another_rooms_message_leaks_and_one_twice_duplicates():
    logs, stored = clean_run()
    logs[1].final_sync = [{"id": 10, "room": ROOM_A}, {"id": 11, "room": ROOM_B}, {"id": 12, "room": ROOM_A},
                          {"id": 12, "room": ROOM_A}]
    assert sorted(v.kind for v in check_sync_complete(logs, stored)) == ["duplicated", "leaked"]


def test_a_missing_final_sync_is_a_violation():
    logs, stored = clean_run()
    logs[0].final_sync = None
    assert [v.kind for v in check_sync_complete(logs, stored)] == ["lost"]


def test_a_frame_of_a_room_the_client_is_not_in_leaks():
    logs, _ = clean_run()
    logs[1].events.append(recv(1, ack("c0-3", 11, ROOM_B, "alice")))
    violations = check_no_leaks(logs, {"c0": "alice", "c1": "bob"})
    assert [(v.kind, v.client) for v in violations] == [("leaked", "c1")]


def test_a_sync_page_with_a_message_of_another_room_leaks():
    logs, _ = clean_run()
    logs[1].events.append(recv(1, {"uuid": "c1-9", "action": "sync", "status": "success",
                                   "messages": [{"id": 30, "room": ROOM_C}]}))
    assert [v.kind for v in check_no_leaks(logs, {"c0": "alice", "c1": "bob"})] == ["leaked"]


def test_a_reply_to_another_clients_request_leaks():
    logs, _ = clean_run()
    # alice's sync reply, or her error, reaching bob: never a broadcast.
    logs[1].events.append(recv(1, {"uuid": "c0-5", "action": "sync", "status": "success", "messages": []}))
    logs[1].events.append(recv(1, error("c0-2")))
    violations = check_no_leaks(logs, {"c0": "alice", "c1": "bob"})
    assert [(v.kind, v.client) for v in violations] == [("leaked", "c1"), ("leaked", "c1")]


def test_a_broadcast_whose_uuid_names_another_author_leaks():
    logs, _ = clean_run()
    # c0's uuid on a message of bob's: a reply routed by the wrong uuid.
    logs[1].events.append(recv(1, ack("c0-7", 12, ROOM_A, "bob")))
    assert [v.kind for v in check_no_leaks(logs, {"c0": "alice", "c1": "bob"})] == ["leaked"]


def test_a_frame_without_uuid_other_than_resync_is_unexpected():
    logs, _ = clean_run()
    logs[1].events.append(recv(1, {"action": "new_message", "status": "success"}))
    assert [v.kind for v in check_no_leaks(logs, {"c0": "alice", "c1": "bob"})] == ["unexpected"]


def test_a_frame_without_a_reply_on_an_open_connection_is_unanswered():
    logs, _ = clean_run()
    logs[0].events.append(sent(2, "c0-6", "sync"))
    violations = check_replies(logs)
    assert [(v.kind, v.client) for v in violations] == [("unanswered", "c0")]
    assert "still open" in violations[0].detail


def test_a_frame_without_a_reply_on_a_connection_the_client_closed_is_unanswered():
    logs, _ = clean_run()
    logs[0].events += [sent(2, "c0-6"), Event("close", 2, code=4000, by_server=False)]
    assert [v.kind for v in check_replies(logs)] == ["unanswered"]


def test_a_frame_without_a_reply_on_an_undocumented_close_is_unanswered():
    logs, _ = clean_run()
    logs[1].events[-1] = Event("close", 1, code=1000, by_server=True)
    assert [(v.kind, v.client) for v in check_replies(logs)] == [("unanswered", "c1")]


def test_two_replies_to_one_request_are_duplicated():
    logs, _ = clean_run()
    logs[0].events.append(recv(2, {"uuid": "c0-5", "action": "sync", "status": "success", "messages": []}))
    # c0-3, sent once: a `timeout` then the late broadcast of its success is allowed; two errors are not.
    logs[0].events.append(recv(2, error("c0-3")))
    assert [v.kind for v in check_replies(logs)] == ["duplicated"]
    logs[0].events.append(recv(2, error("c0-3")))
    assert [v.kind for v in check_replies(logs)] == ["duplicated", "duplicated"]


def test_more_broadcast_copies_than_attempts_are_duplicated():
    logs, _ = clean_run()
    logs[0].events.append(recv(2, ack("c0-3", 11, ROOM_B, "alice")))
    assert [v.kind for v in check_replies(logs)] == ["duplicated"]


def test_a_reply_on_a_connection_the_request_was_not_sent_on_leaks():
    logs, _ = clean_run()
    # c0-1 (authenticate) was sent on connection 1; its reply comes on connection 2.
    logs[0].events.append(recv(2, {"uuid": "c0-1", "action": "authenticate", "status": "success"}))
    assert [v.kind for v in check_replies(logs)] == ["leaked"]
