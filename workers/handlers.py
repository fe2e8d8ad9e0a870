"""One handler per action, in an explicit table. Domain logic stays in `chat.services`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from django.contrib.auth.models import AbstractBaseUser

from chat import services
from chat.serializers import MessageSerializer, UserSerializer

from .envelopes import HandlerResult, success


@dataclass(frozen=True)
class Request:
    """A request from the bus: the client's frame (with the gateway's keys) and its user, if any."""

    data: dict[str, Any]
    user: AbstractBaseUser | None

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


Handler = Callable[[Request], HandlerResult]


def authenticate(request: Request) -> HandlerResult:
    user = services.user_for_token(request.get("token"))
    return HandlerResult(
        success(request.data, user=UserSerializer(user).data),
        session_data={"user_pk": user.pk},
    )


def select_room(request: Request) -> HandlerResult:
    room = services.member_room(request.user, request.get("room"))
    messages = services.recent_messages(room)
    return HandlerResult(success(request.data, room_messages=MessageSerializer(messages, many=True).data))


def new_message(request: Request) -> HandlerResult:
    posted = services.post_message(request.user, request.get("room"), request.get("text"), request.get("uuid"))
    return HandlerResult(
        success(request.data, message=MessageSerializer(posted.message).data),
        # A retry reaches the members again: a member who missed the first reply gets it now,
        # and clients recognise a message they already have by its id.
        send_to=posted.member_ids,
    )


@dataclass(frozen=True)
class Route:
    handler: Handler
    requires_user: bool = True


# The actions this worker answers. The gateway answers `ping` itself.
ROUTES: dict[str, Route] = {
    "authenticate": Route(authenticate, requires_user=False),
    "select_room": Route(select_room),
    "new_message": Route(new_message),
}
