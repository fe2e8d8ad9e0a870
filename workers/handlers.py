"""The chat's own actions, each declared once in the action registry (`workers.actions`).

Domain logic stays in `chat` (services, rooms, reading), reply bodies in `chat.replies`: the REST
API shares both.
"""

from __future__ import annotations

from typing import Sequence

from django.contrib.auth.models import AbstractBaseUser

from chat import catchup, lifecycle, reading, replies, rooms, services
from chat.serializers import MessageSerializer, RoomSerializer, UserSerializer

from .actions import Request, action, registry
from .envelopes import HandlerResult


def authenticate_many(requests: Sequence[Request]) -> list[HandlerResult | Exception]:
    """authenticate for requests that came together (a gateway's clients all connecting again at
    once, after it restarted, say): one query for all their tokens, two for all their tickets."""
    users = services.users_for_credentials([request.data for request in requests])
    return [user if isinstance(user, Exception) else _authenticated(request, user)
            for request, user in zip(requests, users)]


@action("authenticate", requires_user=False, retry=True, batch=authenticate_many)
def authenticate(request: Request) -> HandlerResult:
    [outcome] = authenticate_many([request])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _authenticated(request: Request, user: AbstractBaseUser) -> HandlerResult:
    # The catalogue tells the client which actions it may send again with the same uuid.
    return HandlerResult(
        request.success(user=UserSerializer(user).data, actions=registry.catalogue()["actions"]),
        session_data={"user_pk": user.pk},
    )


@action("select_room", retry=True)
def select_room(request: Request) -> HandlerResult:
    room = services.member_room(request.user, request.get("room"))
    messages = services.recent_messages(room)
    return HandlerResult(request.success(room_messages=MessageSerializer(messages, many=True).data))


def new_messages(requests: Sequence[Request]) -> list[HandlerResult | Exception]:
    """new_message for requests that came together: two statements for all of them
    (services.post_messages_as); each one's result, or what it raised, in order."""
    posts = [services.Post(request.user_pk, request.get("room"), request.get("text"), request.get("uuid"))
             for request in requests]
    return [outcome if isinstance(outcome, Exception) else _message_posted(request, outcome)
            for request, outcome in zip(requests, services.post_messages_as(posts))]


# The busiest action: the sender's account is checked in the query for the room's members.
# Retried, the stored message is found again by its uuid.
@action("new_message", loads_user=False, retry=True, batch=new_messages)
def new_message(request: Request) -> HandlerResult:
    posted = services.post_message_as(request.user_pk, request.get("room"), request.get("text"),
                                      request.get("uuid"))
    return _message_posted(request, posted)


def _message_posted(request: Request, posted: services.PostedMessage) -> HandlerResult:
    # A retry reaches the members again: a member who missed the first reply gets it now,
    # and clients recognise a message they already have by its id.
    return HandlerResult(replies.message_posted(request.data, posted), send_to=posted.member_ids)


@action("list_rooms", retry=True)
def list_rooms(request: Request) -> HandlerResult:
    summaries = rooms.list_rooms(request.user)
    return HandlerResult(request.success(rooms=RoomSerializer(summaries, many=True).data))


# Not retried: a second request would make a second room.
@action("create_room")
def create_room(request: Request) -> HandlerResult:
    summary = rooms.create_room(request.user, request.get("name"), request.get("members", []))
    return HandlerResult(replies.room_changed(request.data, summary), send_to=summary.member_ids)


@action("add_members", retry=True)
def add_members(request: Request) -> HandlerResult:
    summary = rooms.add_members(request.user, request.get("room"), request.get("members"))
    return HandlerResult(replies.room_changed(request.data, summary), send_to=summary.member_ids)


# Not retried: once left, the room is no longer the user's, and a second request is refused.
@action("leave_room")
def leave_room(request: Request) -> HandlerResult:
    departure = rooms.leave_room(request.user, request.get("room"))
    return HandlerResult(replies.member_left(request.data, request.user, departure.cursor),
                         send_to=departure.notify_ids)


@action("direct_message", retry=True)
def direct_message(request: Request) -> HandlerResult:
    posted = rooms.direct_message(request.user, request.get("to"), request.get("text"), request.get("uuid"))
    return HandlerResult(replies.message_posted(request.data, posted), send_to=posted.member_ids)


@action("load_history", retry=True)
def load_history(request: Request) -> HandlerResult:
    page = reading.load_history(request.user, request.get("room"), request.get("before"), request.get("limit"))
    return HandlerResult(request.success(room_messages=MessageSerializer(page.messages, many=True).data,
                                         has_more=page.has_more))


@action("mark_read", retry=True)
def mark_read(request: Request) -> HandlerResult:
    mark = reading.mark_read(request.user, request.get("room"), request.get("message"))
    # Every connection of the reader: its other tabs clear their badge too.
    return HandlerResult(replies.read_marked(request.data, request.get("message"), mark), send_to=[request.user.pk])


# Not retried: a late "is typing" is worse than none.
@action("typing")
def typing(request: Request) -> HandlerResult:
    members = services.members_of(request.user, request.get("room"))
    others = sorted(pk for pk in members if pk != request.user.pk)
    # Never stored, and never sent back to the typist (not even to their other connections).
    return HandlerResult(request.success(user=UserSerializer(request.user).data), send_to=others,
                         requester_reply=False)


@action("who_is_online", retry=True)
def who_is_online(request: Request) -> HandlerResult:
    if request.online is None:
        raise RuntimeError("this worker has no presence reader")
    members = services.members_of(request.user, request.get("room"))
    online = request.online(members)
    return HandlerResult(request.success(online=sorted(members[pk] for pk in online if pk in members)))


# With `since` (a cursor), every change the user missed; with `after` (version 1), new messages only.
@action("sync", retry=True)
def sync(request: Request) -> HandlerResult:
    if "since" in request.data:
        caught_up = catchup.sync_since(request.user, request.get("since"), request.get("limit"))
        return HandlerResult(request.success(events=caught_up.events, cursor=caught_up.cursor,
                                             has_more=caught_up.has_more))
    page = reading.sync(request.user, request.get("after"), request.get("limit"))
    return HandlerResult(request.success(messages=MessageSerializer(page.messages, many=True).data,
                                         has_more=page.has_more))


# The changes of a message: retried with the same uuid, the change is found done and not made again.
@action("edit_message", retry=True)
def edit_message(request: Request) -> HandlerResult:
    changed = lifecycle.edit_message(request.user, request.get("message"), request.get("text"), request.get("uuid"))
    return HandlerResult(replies.message_changed(request.data, changed), send_to=changed.member_ids)


@action("delete_message", retry=True)
def delete_message(request: Request) -> HandlerResult:
    changed = lifecycle.delete_message(request.user, request.get("message"), request.get("uuid"))
    return HandlerResult(replies.message_changed(request.data, changed), send_to=changed.member_ids)


@action("add_reaction", retry=True)
def add_reaction(request: Request) -> HandlerResult:
    changed = lifecycle.add_reaction(request.user, request.get("message"), request.get("emoji"), request.get("uuid"))
    return HandlerResult(replies.message_changed(request.data, changed), send_to=changed.member_ids)


@action("remove_reaction", retry=True)
def remove_reaction(request: Request) -> HandlerResult:
    changed = lifecycle.remove_reaction(request.user, request.get("message"), request.get("emoji"),
                                        request.get("uuid"))
    return HandlerResult(replies.message_changed(request.data, changed), send_to=changed.member_ids)
