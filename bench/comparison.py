"""What the benchmark's comparisons share (bench/channels_chat.py on Django Channels,
bench/socketio_chat.py on python-socketio): a frame answered by the project's own handlers,
the same code and SQL as the real workers, with the rooms of the user it authenticated, for the
server to put the connection in. Import it once Django is set up."""

from __future__ import annotations

from typing import Any

from chat.models import Membership
from workers.dispatch import handle


def answer(frame: dict[str, Any], session_data: dict[str, Any], server: str) -> tuple[dict[str, Any], list[Any]]:
    """One frame's reply envelope (`workers.dispatch.handle`: there is no bus, the reply goes
    straight back, so `server` stands for its ids and topic), and the ids of the user's rooms if
    the frame authenticated one (none otherwise)."""
    request = dict(frame, request_id=server, reply_to=server, session_data=session_data)
    envelope = handle(request, server).envelope
    session = envelope["session_data"]
    rooms: list[Any] = []
    if session is not None and session.get("user_pk") is not None:
        rooms = list(Membership.objects.filter(user_id=session["user_pk"]).values_list("room_id", flat=True))
    return envelope, rooms
