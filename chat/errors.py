"""Domain errors, each with the protocol's stable error code."""


class ChatError(Exception):
    """A request the chat refuses; `code` is the protocol's `error_code`."""

    code = "server_error"
    default_message = "Server error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message


class InvalidMessageFormat(ChatError):
    code = "invalid_message_format"
    default_message = "Invalid message format"


class InvalidAction(ChatError):
    code = "invalid_action"
    default_message = "Unknown action"


class InvalidToken(ChatError):
    code = "invalid_token"
    default_message = "Invalid token"


class AuthenticationRequired(ChatError):
    code = "authentication_required"
    default_message = "Authentication required"


class InvalidRoomId(ChatError):
    # Also the answer for a room the user is not a member of: a non-member cannot tell
    # a room that exists from one that does not.
    code = "invalid_room_id"
    default_message = "Invalid room id"


class EmptyText(ChatError):
    code = "empty_text"
    default_message = "Message text is empty"


class TextTooLong(ChatError):
    code = "text_too_long"
    default_message = "Message text is too long"


class InvalidUser(ChatError):
    code = "invalid_user"
    default_message = "Invalid user"


class Forbidden(ChatError):
    # The permission policy (chat.policy, CHAT["POLICY"]) refused a request the chat's own rules
    # allow; or the user may see a message but not do that to it (edit or delete another's).
    code = "forbidden"
    default_message = "Not allowed"


class InvalidMessageId(ChatError):
    # Also the answer for a message in a room the user is not a member of, as for rooms.
    code = "invalid_message_id"
    default_message = "Invalid message id"


class MessageDeleted(ChatError):
    code = "message_deleted"
    default_message = "The message is deleted"


class InvalidEmoji(ChatError):
    code = "invalid_emoji"
    default_message = "An emoji is 1 to 32 characters, not only white space"


class CursorExpired(ChatError):
    code = "cursor_expired"
    default_message = "The cursor is older than the change feed keeps: reload with list_rooms and select_room"


def codes() -> set[str]:
    """Every error code the chat answers with: ChatError's and its subclasses', a host app's included."""
    found: set[str] = set()
    pending: list[type[ChatError]] = [ChatError]
    while pending:
        kind = pending.pop()
        found.add(kind.code)
        pending.extend(kind.__subclasses__())
    return found
