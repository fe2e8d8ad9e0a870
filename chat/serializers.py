"""REST framework serializers: the protocol's message and user objects.

Plain `Serializer`s with their fields spelled out: a `ModelSerializer` would rebuild its fields
from the model on every instance, which costs more than the rest of a message's serialization.
"""

from rest_framework import serializers

from .models import ChatMessage
from .reactions import of as reactions_of
from .users import display_name


class DisplayNameField(serializers.CharField):
    """The user's name on the wire (`chat.users.display_name`), from the user itself."""

    def __init__(self, **kwargs) -> None:
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, user) -> str:
        return display_name(user)


class UserSerializer(serializers.Serializer):
    # Named "username" in the protocol; it carries the display name (docs/protocol.md).
    username = DisplayNameField()


class ReactionSerializer(serializers.Serializer):
    emoji = serializers.CharField(read_only=True)
    users = serializers.ListField(child=serializers.CharField(), read_only=True)


class MessageSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    user = UserSerializer(read_only=True)
    room = serializers.SerializerMethodField()
    timestamp = serializers.SerializerMethodField()
    text = serializers.CharField(read_only=True)
    edited_at = serializers.SerializerMethodField()
    deleted = serializers.BooleanField(read_only=True)
    reactions = ReactionSerializer(many=True, read_only=True)

    def get_room(self, message: ChatMessage) -> str:
        return message.room_id.hex

    def get_timestamp(self, message: ChatMessage) -> float:
        return message.date_created.timestamp()

    def get_edited_at(self, message: ChatMessage) -> float | None:
        return message.edited_at.timestamp() if message.edited_at is not None else None

    def to_representation(self, message: ChatMessage) -> dict:
        # The fields above, built directly: this runs for every message a worker answers, and
        # REST framework's field-by-field walk costs more than the rest of it. The declared
        # fields still describe the object (OpenAPI schema); a test keeps the two the same.
        edited_at = message.edited_at
        return {"id": message.pk, "user": {"username": display_name(message.user)}, "room": message.room_id.hex,
                "timestamp": message.date_created.timestamp(), "text": message.text,
                "edited_at": edited_at.timestamp() if edited_at is not None else None, "deleted": message.deleted,
                "reactions": reactions_of(message)}


_MESSAGE_SERIALIZER = MessageSerializer()


def message_data(message: ChatMessage) -> dict:
    """`MessageSerializer(message).data`, without a serializer (and its fields) built for each
    message: every new_message answers one, on the worker's busiest path."""
    return _MESSAGE_SERIALIZER.to_representation(message)


class RoomSerializer(serializers.Serializer):
    """A `chat.rooms.RoomSummary` in the protocol's list_rooms form."""

    id = serializers.SerializerMethodField()
    name = serializers.SerializerMethodField()
    is_direct = serializers.SerializerMethodField()
    members = UserSerializer(many=True, read_only=True)
    last_message = MessageSerializer(read_only=True, allow_null=True)
    unread_count = serializers.IntegerField(read_only=True)

    def get_id(self, summary) -> str:
        return summary.room.pk.hex

    def get_name(self, summary) -> str:
        return summary.room.name

    def get_is_direct(self, summary) -> bool:
        return summary.room.is_direct
