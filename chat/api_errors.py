"""The REST API's answer to a refused request: the chat's domain error as `{"error_code", "error_message"}`.

A room (a message) that does not exist and one in a room the user is not a member of get the same
404, body and all.
"""

from __future__ import annotations

import logging
from typing import Any

from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from . import errors

logger = logging.getLogger(__name__)

# Every other ChatError is the client's mistake in the request: 400.
STATUS_BY_ERROR: dict[type[errors.ChatError], int] = {
    errors.InvalidRoomId: status.HTTP_404_NOT_FOUND,
    errors.InvalidMessageId: status.HTTP_404_NOT_FOUND,
    errors.Forbidden: status.HTTP_403_FORBIDDEN,
    # The request is well formed, but the message's state refuses it: a deleted message takes no
    # edit and no reaction.
    errors.MessageDeleted: status.HTTP_409_CONFLICT,
}


def status_for(exc: errors.ChatError) -> int:
    for error_class, code in STATUS_BY_ERROR.items():
        if isinstance(exc, error_class):
            return code
    return status.HTTP_400_BAD_REQUEST


def error_response(exc: errors.ChatError) -> Response:
    return Response({"error_code": exc.code, "error_message": exc.message}, status=status_for(exc))


class ChatErrorResponses:
    """An APIView mixin: a `ChatError` raised by a handler becomes its error response; the rest, DRF's."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, errors.ChatError):
            request: Request | Any = getattr(self, "request", None)
            # The code only: a refused request's fields may be a person's text.
            logger.info("%s %s user=%s refused: %s", getattr(request, "method", "?"), getattr(request, "path", "?"),
                        getattr(getattr(request, "user", None), "pk", None), exc.code)
            return error_response(exc)
        return super().handle_exception(exc)  # type: ignore[misc]
