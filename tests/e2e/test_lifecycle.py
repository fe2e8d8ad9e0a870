"""The message lifecycle end to end, through the real gateways and workers: edits, deletions and
reactions reach every member live with a cursor, and `sync` by cursor after a reconnect brings
every change made while away, on whichever gateway the client comes back."""

from __future__ import annotations

import pytest

from chat.models import ChatMessage
from tests.e2e.client import MESSAGE_KEYS
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_changes_reach_every_member_live_with_a_cursor(e2e):
    data = e2e.fixtures(users=3)
    author, reader, outsider = data["users"]

    async def scenario(session):
        writer = await connect(session, e2e.gateway_a, author)
        other = await connect(session, e2e.gateway_b, reader)
        stranger = await connect(session, e2e.gateway_b, outsider)
        room = (await writer.ok("create_room", name="lifecycle", members=[reader["username"]]))["room"]["id"]
        posted = await writer.ok("new_message", room=room, text="frist")
        assert isinstance(posted["cursor"], str) and set(posted["message"]) == MESSAGE_KEYS
        message_id = posted["message"]["id"]

        steps = [("edit_message", writer, {"text": "first"}), ("add_reaction", other, {"emoji": "👍"}),
                 ("add_reaction", writer, {"emoji": "👍"}), ("remove_reaction", other, {"emoji": "👍"}),
                 ("delete_message", writer, {})]
        for action, client, fields in steps:
            reply = await client.ok(action, message=message_id, **fields)
            # The member who did not send it gets the same reply, cursor included.
            watcher = other if client is writer else writer
            live = await watcher.expect(lambda frame, a=action: frame.get("action") == a
                                        and frame.get("message", {}).get("id") == message_id)
            assert {key: live[key] for key in ("room", "message", "cursor")} == {
                key: reply[key] for key in ("room", "message", "cursor")}
            assert reply["room"] == room and isinstance(reply["cursor"], str)
        assert reply["message"] | {"timestamp": 0} == {
            "id": message_id, "user": {"username": author["username"]}, "room": room, "timestamp": 0,
            "text": "", "edited_at": reply["message"]["edited_at"], "deleted": True, "reactions": []}

        refused = await stranger.request("add_reaction", message=message_id, emoji="👍")
        assert refused["error_code"] == "invalid_message_id"
        refused = await other.request("edit_message", message=message_id, text="x")
        assert refused["error_code"] == "forbidden"
        refused = await writer.request("edit_message", message=message_id, text="back")
        assert refused["error_code"] == "message_deleted"

    run(scenario)
    assert ChatMessage.objects.get().text == ""


def test_sync_by_cursor_after_a_reconnect_brings_every_change_made_while_away(e2e):
    data = e2e.fixtures(users=2)
    away, writer_user = data["users"]

    async def scenario(session):
        writer = await connect(session, e2e.gateway_a, writer_user)
        room = (await writer.ok("create_room", name="while away", members=[away["username"]]))["room"]["id"]
        kept = await writer.ok("new_message", room=room, text="kept")
        edited = await writer.ok("new_message", room=room, text="draft")
        gone = await writer.ok("new_message", room=room, text="oops")

        client = await connect(session, e2e.gateway_a, away)
        start = await client.ok("sync", since="")
        assert (start["events"], start["has_more"]) == ([], False)
        live = await client.ok("add_reaction", message=kept["message"]["id"], emoji="🎉")
        cursor = live["cursor"]
        await client.close()

        await writer.ok("edit_message", message=edited["message"]["id"], text="final")
        await writer.ok("delete_message", message=gone["message"]["id"])
        await writer.ok("add_reaction", message=kept["message"]["id"], emoji="🎉")
        fresh = await writer.ok("new_message", room=room, text="new")
        await writer.ok("leave_room", room=room)

        # Back through the other gateway, from the cursor of the last reply it processed.
        client = await connect(session, e2e.gateway_b, away)
        events, pages = [], 0
        while True:
            page = await client.ok("sync", since=cursor, limit=2)
            events += page["events"]
            cursor, pages = page["cursor"], pages + 1
            if not page["has_more"]:
                break
        assert pages >= 3
        latest = {}
        for event in events:
            key = ("message", event["message"]["id"]) if "message" in event and isinstance(event["message"], dict) \
                else (event["action"], event["room"])
            latest[key] = event
        assert latest[("message", edited["message"]["id"])]["message"]["text"] == "final"
        assert latest[("message", gone["message"]["id"])]["message"]["deleted"] is True
        assert latest[("message", kept["message"]["id"])]["message"]["reactions"] == [
            {"emoji": "🎉", "users": [away["username"], writer_user["username"]]}]
        assert latest[("message", fresh["message"]["id"])]["action"] == "new_message"
        assert latest[("leave_room", room)]["user"] == {"username": writer_user["username"]}
        # Nothing more after the last cursor.
        assert (await client.ok("sync", since=cursor))["events"] == []
        # Version 1's sync still answers, with messages only.
        old = await client.ok("sync", after=kept["message"]["id"])
        assert [m["id"] for m in old["messages"]] == [edited["message"]["id"], gone["message"]["id"],
                                                      fresh["message"]["id"]]

    run(scenario)
