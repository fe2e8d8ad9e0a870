"""The benchmark's Django Channels comparison: the chat's `authenticate` and `new_message` as a
Django team would serve them with Channels today, measured by `python -m bench --targets
channels` with the same load generator, fixtures and database as the real stack.

An ASGI application (served by uvicorn, `--workers` as the gateway's processes) whose consumer
answers each frame with the project's own handlers (`workers.dispatch.handle`, the same code and
SQL as the real workers, run by `database_sync_to_async`), and fans a stored message out the way
Channels' tutorial and documentation do: every connection joins a group per room of its user when
it authenticates, and a message is one `group_send` to its room's group on the channels_redis
layer (`bench/channels_settings.py`). Replies and broadcasts are the real stack's frames. Every
other action is answered to the requester alone: the benchmark sends none.

Run alone: DJANGO_SETTINGS_MODULE=bench.channels_settings python -m uvicorn
bench.channels_chat:application --port 8001 (then ws://127.0.0.1:8001/ws).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.channels_settings")

import django  # noqa: E402

django.setup()

from channels.db import database_sync_to_async  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench.comparison import answer  # noqa: E402
from workers import envelopes  # noqa: E402


def room_group(room_id: Any) -> str:
    """The Channels group of a room's connections (a group name is ASCII letters, digits, - _ .)."""
    return f"room-{uuid.UUID(str(room_id)).hex}"


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.session_data: dict[str, Any] = {}
        self.room_groups: list[str] = []
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in self.room_groups:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            data = json.loads(text_data) if text_data is not None else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            await self.close(code=1003)
            return
        envelope, rooms = await database_sync_to_async(answer)(data, self.session_data, "channels")
        if envelope["session_data"] is not None:
            self.session_data = envelope["session_data"]
        for group in map(room_group, rooms):
            if group not in self.room_groups:
                await self.channel_layer.group_add(group, self.channel_name)
                self.room_groups.append(group)
        response = envelope["response"]
        frame = envelopes.encode(response).decode()
        if data.get("action") == "new_message" and response.get("status") == "success":
            # The sender is in the group too: it gets its reply as the others get the message.
            await self.channel_layer.group_send(room_group(response["message"]["room"]),
                                                {"type": "chat.frame", "frame": frame})
        else:
            await self.send(text_data=frame)

    async def chat_frame(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["frame"])


application = ProtocolTypeRouter({
    "websocket": URLRouter([path("ws", ChatConsumer.as_asgi())]),
})
