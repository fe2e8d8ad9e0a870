"""The REST API end to end: what it stores reaches the members' WebSocket connections live."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest
from yarl import URL

from chat.models import ChatMessage
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_message_posted_over_rest_reaches_connected_members_live(e2e, web):
    room, poster, reader, outsider = e2e.room_of_two()
    frame_uuid = f"rest-{uuid.uuid4().hex}"

    async def scenario(session):
        reader_a = await connect(session, e2e.gateway_a, reader)
        reader_b = await connect(session, e2e.gateway_b, reader)
        poster_b = await connect(session, e2e.gateway_b, poster)
        stranger = await connect(session, e2e.gateway_a, outsider)

        url = f"{web}/api/rooms/{room['id']}/messages/"
        async with session.post(url, json={"text": "over REST", "uuid": frame_uuid},
                                headers={"Authorization": f"Token {poster['token']}"}) as response:
            body = await response.json(content_type=None)
            assert response.status == 201, (response.status, body)
        assert body["text"] == "over REST" and body["user"] == {"username": poster["username"]}
        assert body["room"] == room["id"]

        expected = {"uuid": frame_uuid, "action": "new_message", "room": room["id"], "status": "success",
                    "message": body}

        def same(frame):
            return frame.get("action") == "new_message" and frame.get("message", {}).get("id") == body["id"]

        # Every connection of every member, the poster's own included, with the change feed's cursor.
        for client in (reader_a, reader_b, poster_b):
            live = await client.expect(same)
            assert isinstance(live.pop("cursor"), str)
            assert live == expected
        await stranger.barrier()
        assert stranger.unread(same) == []

        # A non-member is refused like a room that does not exist, and nothing is published.
        async with session.post(url, json={"text": "let me in"},
                                headers={"Authorization": f"Token {outsider['token']}"}) as response:
            assert response.status == 404, response.status
        async with session.post(url, json={"text": "anonymous"}) as response:
            assert response.status in (401, 403), response.status
        later = await poster_b.ok("new_message", room=room["id"], text="after the refusals")
        await reader_a.expect(
            lambda f: f.get("action") == "new_message" and f["message"]["id"] == later["message"]["id"])
        assert reader_a.unread(lambda f: f.get("action") == "new_message") == []
        # And the message is in the room's history as if sent over the WebSocket.
        history = await reader_b.ok("load_history", room=room["id"])
        assert history["room_messages"] == [body, later["message"]]

    run(scenario)
    assert e2e.orm(lambda: list(ChatMessage.objects.filter(room_id=room["id"]).values_list("text", flat=True))) == [
        "over REST", "after the refusals"]


def test_message_changes_over_rest_reach_connected_members_live(e2e, web):
    room, author, reader, outsider = e2e.room_of_two()
    # A "/" and a space in it: percent-encoded in the path, the way every client must send an emoji.
    emoji = "👍/ok ok"

    async def scenario(session):
        reader_a = await connect(session, e2e.gateway_a, reader)
        reader_b = await connect(session, e2e.gateway_b, reader)
        author_b = await connect(session, e2e.gateway_b, author)
        stranger = await connect(session, e2e.gateway_a, outsider)
        posted = (await author_b.ok("new_message", room=room["id"], text="a secret over the socket"))["message"]
        message_url = f"{web}/api/messages/{posted['id']}/"
        reaction_url = URL(f"{message_url}reactions/{quote(emoji, safe='')}/", encoded=True)

        async def over_rest(method: str, url, user: dict, body: dict, action: str) -> dict:
            """Make the change over REST; every connection of every member gets its reply live."""
            frame_uuid = f"rest-{uuid.uuid4().hex}"
            async with session.request(method, url, json={**body, "uuid": frame_uuid},
                                       headers={"Authorization": f"Token {user['token']}"}) as response:
                answer = await response.json(content_type=None)
                assert response.status == 200, (response.status, answer)
            for client in (reader_a, reader_b, author_b):
                live = await client.expect(lambda f: f.get("uuid") == frame_uuid)
                assert isinstance(live.pop("cursor"), str)
                assert live == {"uuid": frame_uuid, "action": action, "room": room["id"], "status": "success",
                                "message": answer}
            return answer

        edited = await over_rest("PATCH", message_url, author, {"text": "edited over REST"}, "edit_message")
        assert edited["text"] == "edited over REST" and edited["edited_at"] is not None
        reacted = await over_rest("PUT", reaction_url, reader, {}, "add_reaction")
        assert reacted["reactions"] == [{"emoji": emoji, "users": [reader["username"]]}]
        unreacted = await over_rest("DELETE", reaction_url, reader, {}, "remove_reaction")
        assert unreacted["reactions"] == []
        deleted = await over_rest("DELETE", message_url, author, {}, "delete_message")
        assert (deleted["deleted"], deleted["text"]) == (True, "")

        # Nothing for a non-member, who is refused like a message that does not exist.
        await stranger.barrier()
        assert stranger.unread(lambda f: isinstance(f.get("message"), dict)
                               and f["message"]["id"] == posted["id"]) == []
        async with session.put(reaction_url, headers={"Authorization": f"Token {outsider['token']}"}) as response:
            assert response.status == 404, response.status
        # The WebSocket's history shows the tombstone, as REST answered it.
        history = await reader_b.ok("load_history", room=room["id"])
        assert history["room_messages"] == [deleted]
        return posted["id"]

    message_id = run(scenario)
    assert e2e.orm(lambda: list(ChatMessage.objects.filter(pk=message_id).values_list("text", "deleted"))) == [
        ("", True)]
