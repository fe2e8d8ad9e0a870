"""Serializers that describe the REST API's bodies in its OpenAPI schema.

They document; they do not check. The views hand the raw fields to `chat.fields` (through the
domain functions), so that a bad field gets the same error code over REST as over the WebSocket.
"""

from rest_framework import serializers

from websockets_gateway import wire

from . import fields, users

UUID_HELP = ("The client's id for this request, 1..64 characters; echoed as `uuid` in the live event. "
             "For a message, and for a change of one (edit, delete, reaction), it is also the idempotency "
             "key: a retry with the same uuid stores nothing new and answers the message as stored (over "
             "REST or the WebSocket alike).")


def _client_uuid() -> serializers.CharField:
    return serializers.CharField(required=False, min_length=1, max_length=wire.MAX_UUID_LENGTH,
                                 help_text=UUID_HELP)


def _name_length() -> int:
    return max(fields.MAX_USERNAME_LENGTH, users.login_max_length())


def _usernames(required: bool = True) -> serializers.ListField:
    return serializers.ListField(required=required, child=serializers.CharField(max_length=_name_length()),
                                 max_length=fields.MAX_USERNAMES, help_text="Login names; unknown ones are an "
                                 "`invalid_user` error, names already members are not.")


class CreateRoomRequest(serializers.Serializer):
    name = serializers.CharField(max_length=fields.MAX_ROOM_NAME_LENGTH)
    members = _usernames(required=False)  # absent: a room of the user alone
    uuid = _client_uuid()


class AddMembersRequest(serializers.Serializer):
    members = _usernames()
    uuid = _client_uuid()


class LeaveRoomRequest(serializers.Serializer):
    uuid = _client_uuid()


class PostMessageRequest(serializers.Serializer):
    text = serializers.CharField(help_text="Not empty or only white space; at most MAX_MESSAGE_LENGTH "
                                           "(default 4000) characters.")
    uuid = _client_uuid()


class DirectMessageRequest(PostMessageRequest):
    to = serializers.CharField(max_length=_name_length(),
                               help_text="The other user's login name (the user model's USERNAME_FIELD).")


class EditMessageRequest(serializers.Serializer):
    text = serializers.CharField(help_text="The new text, checked as a new message's: not empty or only white "
                                           "space; at most MAX_MESSAGE_LENGTH (default 4000) characters.")
    uuid = _client_uuid()

    # drf-spectacular describes a PATCH body as REST framework's partial update, every field
    # optional (it sets `partial` on a copy). This PATCH changes the one thing an edit changes,
    # and `text` is required: the body is never partial.
    @property
    def partial(self) -> bool:
        return False

    @partial.setter
    def partial(self, value: bool) -> None:
        pass


class AddReactionRequest(serializers.Serializer):
    # The body is optional: the emoji is in the path. (A DELETE's body, which OpenAPI 3.0 cannot
    # describe, takes the same `uuid`; see the operations' descriptions.)
    uuid = _client_uuid()


class MarkReadRequest(serializers.Serializer):
    message = serializers.IntegerField(min_value=0, help_text="The id of the newest message read.")
    uuid = _client_uuid()


class ReadMarkResponse(serializers.Serializer):
    room = serializers.CharField(help_text="The room id, 32 hex digits.")
    last_read_id = serializers.IntegerField()
    unread_count = serializers.IntegerField()


class ChatErrorResponse(serializers.Serializer):
    error_code = serializers.CharField(help_text="Stable, for programs: the WebSocket protocol's error codes.")
    error_message = serializers.CharField(help_text="For people.")


class TokenResponse(serializers.Serializer):
    token = serializers.CharField(help_text="The user's REST framework token: `Authorization: Token KEY`.")


class TicketResponse(serializers.Serializer):
    ticket = serializers.CharField(help_text="For the WebSocket's `authenticate` action, in its `ticket` field.")
    expires_in = serializers.IntegerField(help_text="Seconds the ticket is good for (TICKET_MAX_AGE).")

