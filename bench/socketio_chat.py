"""The benchmark's python-socketio comparison: the chat's `authenticate` and `new_message` as a
Django team would serve them with python-socketio, measured by `python -m bench --targets
socketio` with the same load generator (speaking Socket.IO: bench/load.py), fixtures and
database as the real stack.

A python-socketio `AsyncServer` on aiohttp, served like the gateway (gunicorn's aiohttp worker, as
many processes), WebSocket transport only, with the message queue its documentation deploys
several processes with (`AsyncRedisManager` on the stack's Redis: an emit to a room is published
there and every process delivers it to its own members of the room). Each chat frame is a
`frame` event; the server answers it with the project's own handlers (`workers.dispatch.handle`,
the same code and SQL as the real workers, run in one thread per process by asgiref's
`sync_to_async`, as Channels runs them) and emits the reply as a `frame` event: a stored message
to its room (the sender is in it), anything else to the requester alone, directly rather than
through the queue (`ignore_queue`: the requester is on this process). A connection enters a room
per room of its user when it authenticates. Replies and broadcasts are the real stack's frames.

Run alone: python -m gunicorn bench.socketio_chat:application --worker-class
aiohttp.GunicornWebWorker --bind 127.0.0.1:8002 (then ws://127.0.0.1:8002/socket.io/?EIO=4&transport=websocket).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django  # noqa: E402

django.setup()

import socketio  # noqa: E402
from aiohttp import web  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from chat.conf import chat_settings  # noqa: E402

from bench.comparison import answer  # noqa: E402

# The event every chat frame travels in, both ways.
EVENT = "frame"

sio = socketio.AsyncServer(
    async_mode="aiohttp", transports=["websocket"],
    client_manager=socketio.AsyncRedisManager(chat_settings.REDIS_URL, channel=os.environ.get("SOCKETIO_CHANNEL",
                                                                                         "socketio")),
)
# Each connection's session data (the workers' `session_data`), by Socket.IO session id.
sessions: dict[str, dict[str, Any]] = {}


def room_key(room_id: Any) -> str:
    """A room's Socket.IO room: its id in one spelling, from the ORM's UUID or a reply's string."""
    return str(uuid.UUID(str(room_id)))


@sio.event
async def connect(sid: str, environ: dict[str, Any]) -> None:
    sessions[sid] = {}


@sio.event
async def disconnect(sid: str, reason: Any = None) -> None:
    sessions.pop(sid, None)


@sio.on(EVENT)
async def frame(sid: str, data: Any) -> None:
    if not isinstance(data, dict):
        await sio.disconnect(sid)
        return
    envelope, rooms = await sync_to_async(answer, thread_sensitive=True)(data, sessions.get(sid, {}), "socketio")
    if envelope["session_data"] is not None:
        sessions[sid] = envelope["session_data"]
    for room in rooms:
        await sio.enter_room(sid, room_key(room))
    response = envelope["response"]
    if data.get("action") == "new_message" and response.get("status") == "success":
        await sio.emit(EVENT, response, room=room_key(response["message"]["room"]))
    else:
        await sio.emit(EVENT, response, to=sid, ignore_queue=True)


application = web.Application()
sio.attach(application)
