"""`chat.serializers.MessageSerializer` produces the protocol's message object exactly."""

from __future__ import annotations

import json
import re

import pytest

from chat.models import ChatMessage
from chat.serializers import MessageSerializer, message_data


@pytest.fixture
def message(make_user, make_room):
    alice = make_user("alice")
    room = make_room(alice)
    return ChatMessage.objects.create(user=alice, room=room, text="héllo")


def test_message_has_the_protocol_shape(message):
    data = MessageSerializer(message).data
    assert set(data) == {"id", "user", "room", "timestamp", "text", "edited_at", "deleted", "reactions"}
    assert (data["edited_at"], data["deleted"], data["reactions"]) == (None, False, [])
    assert data["id"] == message.pk
    assert data["user"] == {"username": "alice"}
    assert re.fullmatch(r"[0-9a-f]{32}", data["room"])
    assert data["room"] == message.room.pk.hex
    assert data["text"] == "héllo"


def test_timestamp_is_epoch_seconds_as_a_float(message):
    data = MessageSerializer(message).data
    assert isinstance(data["timestamp"], float)
    assert data["timestamp"] == pytest.approx(message.date_created.timestamp())


def test_serialized_message_is_plain_json(message):
    data = MessageSerializer(message).data
    assert json.loads(json.dumps(data)) == {
        "id": message.pk,
        "user": {"username": "alice"},
        "room": message.room.pk.hex,
        "timestamp": data["timestamp"],
        "text": "héllo",
        "edited_at": None,
        "deleted": False,
        "reactions": [],
    }


def test_many(message):
    assert [m["id"] for m in MessageSerializer([message, message], many=True).data] == [message.pk, message.pk]


def test_the_fast_representation_matches_the_declared_fields(message):
    # to_representation is written out by hand for speed; REST framework's own walk over the
    # declared fields (which the OpenAPI schema describes) must give the same object.
    from rest_framework import serializers

    serializer = MessageSerializer(message)
    declared = serializers.Serializer.to_representation(serializer, message)
    assert serializer.data == declared


def test_message_data_is_the_serializers_data(make_user, make_room, message):
    # One serializer serves every message_data call: each answer is its own, for its message.
    other = ChatMessage.objects.create(user=make_user("bob"), room=make_room(), text="two")
    first, second = message_data(message), message_data(other)
    assert first == MessageSerializer(message).data and second == MessageSerializer(other).data
    assert first is not second and first["text"] == "héllo" and second["user"] == {"username": "bob"}
