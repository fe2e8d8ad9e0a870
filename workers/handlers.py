"""One handler per action, in an explicit table. Domain logic stays in `chat.services`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from django.contrib.auth.models import AbstractBaseUser

from chat import reading, rooms, services
from chat.serializers import MessageSerializer, RoomSerializer, UserSerializer, message_data

from .envelopes import HandlerResult, success


@dataclass(frozen=True)
class Request:
    """A request from the bus: the client's frame (with the gateway's keys) and its user, if any."""

    data: dict[str, Any]
    user: AbstractBaseUser | None
    # Which of these user ids have an open, authenticated connection on some gateway (Redis).
    online: Callable[[Iterable[int]], set[int]] | None = None
    # The session's user id, unchecked: for a route that checks the account itself (loads_user=False).
    user_pk: int | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


Handler = Callable[[Request], HandlerResult]
# Several requests of one action answered together: each one's result, or the exception it raised.
BatchHandler = Callable[[Sequence[Request]], list[HandlerResult | Exception]]


def authenticate(request: Request) -> HandlerResult:
    [outcome] = authenticate_many([request])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def authenticate_many(requests: Sequence[Request]) -> list[HandlerResult | Exception]:
    """authenticate for requests that came together (a gateway's clients all connecting again at
    once, after it restarted, say): one query for all their tokens, two for all their tickets."""
    users = services.users_for_credentials([request.data for request in requests])
    return [user if isinstance(user, Exception) else _authenticated(request, user)
            for request, user in zip(requests, users)]


def _authenticated(request: Request, user: AbstractBaseUser) -> HandlerResult:
    return HandlerResult(
        success(request.data, user=UserSerializer(user).data),
        session_data={"user_pk": user.pk},
    )


def select_room(request: Request) -> HandlerResult:
    room = services.member_room(request.user, request.get("room"))
    messages = services.recent_messages(room)
    return HandlerResult(success(request.data, room_messages=MessageSerializer(messages, many=True).data))


def new_message(request: Request) -> HandlerResult:
    # The busiest action: the sender's account is checked in the query for the room's members.
    posted = services.post_message_as(request.user_pk, request.get("room"), request.get("text"),
                                      request.get("uuid"))
    return _message_posted(request, posted)


def new_messages(requests: Sequence[Request]) -> list[HandlerResult | Exception]:
    """new_message for requests that came together: two statements for all of them
    (services.post_messages_as); each one's result, or what it raised, in order."""
    posts = [services.Post(request.user_pk, request.get("room"), request.get("text"), request.get("uuid"))
             for request in requests]
    return [outcome if isinstance(outcome, Exception) else _message_posted(request, outcome)
            for request, outcome in zip(requests, services.post_messages_as(posts))]


def _message_posted(request: Request, posted: services.PostedMessage) -> HandlerResult:
    return HandlerResult(
        success(request.data, message=message_data(posted.message)),
        # A retry reaches the members again: a member who missed the first reply gets it now,
        # and clients recognise a message they already have by its id.
        send_to=posted.member_ids,
    )


def list_rooms(request: Request) -> HandlerResult:
    summaries = rooms.list_rooms(request.user)
    return HandlerResult(success(request.data, rooms=RoomSerializer(summaries, many=True).data))


def create_room(request: Request) -> HandlerResult:
    summary = rooms.create_room(request.user, request.get("name"), request.get("members", []))
    return HandlerResult(success(request.data, room=RoomSerializer(summary).data), send_to=summary.member_ids)


def add_members(request: Request) -> HandlerResult:
    summary = rooms.add_members(request.user, request.get("room"), request.get("members"))
    # `room` is the room object here, as the protocol gives this reply, not the id echoed.
    return HandlerResult(success(request.data, room=RoomSerializer(summary).data), send_to=summary.member_ids)


def leave_room(request: Request) -> HandlerResult:
    departure = rooms.leave_room(request.user, request.get("room"))
    return HandlerResult(success(request.data, user=UserSerializer(request.user).data),
                         send_to=departure.notify_ids)


def direct_message(request: Request) -> HandlerResult:
    posted = rooms.direct_message(request.user, request.get("to"), request.get("text"), request.get("uuid"))
    message = message_data(posted.message)
    return HandlerResult(success(request.data, room=message["room"], message=message), send_to=posted.member_ids)


def load_history(request: Request) -> HandlerResult:
    page = reading.load_history(request.user, request.get("room"), request.get("before"), request.get("limit"))
    return HandlerResult(success(request.data, room_messages=MessageSerializer(page.messages, many=True).data,
                                 has_more=page.has_more))


def mark_read(request: Request) -> HandlerResult:
    mark = reading.mark_read(request.user, request.get("room"), request.get("message"))
    # Every connection of the reader: its other tabs clear their badge too.
    return HandlerResult(success(request.data, message=request.get("message"), last_read_id=mark.last_read_id,
                                 unread_count=mark.unread_count), send_to=[request.user.pk])


def typing(request: Request) -> HandlerResult:
    members = services.members_of(request.user, request.get("room"))
    others = sorted(pk for pk in members if pk != request.user.pk)
    # Never stored, and never sent back to the typist (not even to their other connections).
    return HandlerResult(success(request.data, user=UserSerializer(request.user).data), send_to=others,
                         requester_reply=False)


def who_is_online(request: Request) -> HandlerResult:
    if request.online is None:
        raise RuntimeError("this worker has no presence reader")
    members = services.members_of(request.user, request.get("room"))
    online = request.online(members)
    return HandlerResult(success(request.data, online=sorted(members[pk] for pk in online if pk in members)))


def sync(request: Request) -> HandlerResult:
    page = reading.sync(request.user, request.get("after"), request.get("limit"))
    return HandlerResult(success(request.data, messages=MessageSerializer(page.messages, many=True).data,
                                 has_more=page.has_more))


@dataclass(frozen=True)
class Route:
    handler: Handler
    requires_user: bool = True
    # False: the handler gets the session's user id (Request.user_pk) and checks the account
    # itself, in a query it makes anyway, and answers authentication_required as dispatch would.
    loads_user: bool = True
    # For requests of this action that arrive one after another in a batch: answers them together,
    # each as `handler` would have. If it raises, dispatch answers each again with `handler`: what
    # it did must be safe to do again (a stored message is found again by its uuid).
    batch: BatchHandler | None = None


# The actions this worker answers. The gateway answers `ping` itself.
ROUTES: dict[str, Route] = {
    "authenticate": Route(authenticate, requires_user=False, batch=authenticate_many),
    "select_room": Route(select_room),
    "new_message": Route(new_message, loads_user=False, batch=new_messages),
    "list_rooms": Route(list_rooms),
    "create_room": Route(create_room),
    "add_members": Route(add_members),
    "leave_room": Route(leave_room),
    "direct_message": Route(direct_message),
    "load_history": Route(load_history),
    "mark_read": Route(mark_read),
    "typing": Route(typing),
    "who_is_online": Route(who_is_online),
    "sync": Route(sync),
}
