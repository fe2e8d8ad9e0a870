"""`python -m bench.relay_worker --subscribe_topic NAME --fixtures PATH`: the benchmark's bare relay.

A bus worker without Django and without a database: the fixtures' users (token → user) and rooms
(room → member ids) are held in memory, and `authenticate` and `new_message` are answered with
the reply shapes, `send_to` members and envelopes of the real worker (`workers/consumer.py`,
`workers/dispatch.py`, `workers/envelopes.py`). `python -m bench` runs it in place of the real
workers, on the same gateway and Redis (one Redis, or a Redis Cluster with REDIS_CLUSTER=1, through
websockets_gateway/redis_clients.py as the real worker), so that real/baseline ratios show what the
Django worker costs beyond the relay path itself. Every other action is answered `invalid_action`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from websockets_gateway import redis_clients, wire

logger = logging.getLogger("relay_worker")

# As in workers/consumer.py: how often the loop wakes with no message, to notice a stop request.
POLL_INTERVAL = 0.5
# As in chat/fields.py and project/settings.py (MAX_MESSAGE_LENGTH's default).
# The actions it answers, as the real worker's catalogue gives them in the authenticate reply.
CATALOGUE = {"authenticate": {"retry": True}, "new_message": {"retry": True}}
MAX_MESSAGE_LENGTH = 4000


class Refused(Exception):
    """A request answered with an error reply, as chat.errors.ChatError is by the real worker."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Directory:
    """The fixtures in memory: who a token is, who the members of a room are."""

    def __init__(self, fixtures: Iterable[dict[str, Any]]) -> None:
        self.users_by_token: dict[str, tuple[int, str]] = {}
        self.usernames: dict[int, str] = {}
        self.room_members: dict[uuid.UUID, list[int]] = {}
        for part in fixtures:
            for user in part.get("users", []):
                self.users_by_token[user["token"]] = (user["id"], user["username"])
                self.usernames[user["id"]] = user["username"]
            for room in part.get("rooms", []):
                # Sorted, as the real worker reads them (ORDER BY user_id).
                self.room_members[uuid.UUID(room["id"])] = sorted(room["members"])

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> Directory:
        return cls(json.loads(Path(path).read_text()) for path in paths)


class Relay:
    """Answers one decoded request with the envelope the real worker would publish, and its topic."""

    def __init__(self, directory: Directory, response_topic: str, first_message_id: int = 1,
                 message_id_step: int = 1) -> None:
        self.directory = directory
        self.response_topic = response_topic
        # Message ids from a counter; workers given distinct starts and a common step never clash.
        self._message_ids = itertools.count(first_message_id, message_id_step)
        self._routes = {"authenticate": self._authenticate, "new_message": self._new_message}

    def process(self, raw: bytes | str) -> tuple[str, str] | None:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("reply_to"), str) or not data.get("request_id"):
            return None
        try:
            envelope = self._answer(data)
        except Refused as refused:
            envelope = _envelope(data, wire.error_reply(data, refused.code, refused.message), ok=False)
        topic = data["reply_to"] if envelope["send_to"] is None else self.response_topic
        return topic, json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)

    def _answer(self, data: dict[str, Any]) -> dict[str, Any]:
        request_error = wire.request_error(data)
        if request_error is not None:
            raise Refused("invalid_message_format", request_error)
        action = data["action"]
        route = self._routes.get(action)
        if route is None:
            raise Refused("invalid_action", f"Unknown action {action[:40]!r} (the relay baseline answers "
                                            "authenticate and new_message only)")
        return route(data)

    def _authenticate(self, data: dict[str, Any]) -> dict[str, Any]:
        found = self.directory.users_by_token.get(data.get("token")) if isinstance(data.get("token"), str) else None
        if found is None:
            raise Refused("invalid_token", "Invalid token")
        user_pk, username = found
        return _envelope(data, wire.success_reply(data, user={"username": username}, actions=CATALOGUE),
                         session_data={"user_pk": user_pk})

    def _new_message(self, data: dict[str, Any]) -> dict[str, Any]:
        session = data.get("session_data")
        user_pk = session.get("user_pk") if isinstance(session, dict) else None
        if user_pk not in self.directory.usernames:
            raise Refused("authentication_required", "Authentication required")
        room = data.get("room")
        if not isinstance(room, str):
            raise Refused("invalid_message_format", "room must be a string")
        try:
            room_uuid = uuid.UUID(room) if len(room) in (32, 36) else None
        except ValueError:
            room_uuid = None
        members = self.directory.room_members.get(room_uuid) if room_uuid is not None else None
        if members is None or user_pk not in members:
            raise Refused("invalid_room_id", "Invalid room id")
        text = data.get("text")
        if not isinstance(text, str):
            raise Refused("invalid_message_format", "text must be a string")
        if not text.strip():
            raise Refused("empty_text", "Message text is empty")
        if len(text) > MAX_MESSAGE_LENGTH:
            raise Refused("text_too_long", f"Message text is longer than {MAX_MESSAGE_LENGTH} characters")
        message_id = next(self._message_ids)
        message = {"id": message_id, "user": {"username": self.directory.usernames[user_pk]},
                   "room": room_uuid.hex, "timestamp": time.time(), "text": text, "edited_at": None,
                   "deleted": False, "reactions": []}
        # A cursor of the shape the real worker's (opaque to clients) hands out.
        return _envelope(data, wire.success_reply(data, message=message, cursor=f"0.{message_id}"),
                         send_to=list(members))


def _envelope(request: dict[str, Any], response: dict[str, Any], ok: bool = True,
              send_to: list[int] | None = None, session_data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "success_response" if ok else "error_response", "request_id": request.get("request_id"),
            "send_to": send_to, "session_data": session_data, "response": response}


class RelayConsumer:
    """The real worker's loop (workers/consumer.py) in its plain form: subscribe, answer, publish."""

    def __init__(self, redis_url: str, topic: str, relay: Relay, cluster: bool = False) -> None:
        self.topic = topic
        self.relay = relay
        self._redis = redis_clients.sync_client(redis_url, cluster, socket_connect_timeout=2.0, socket_timeout=5.0,
                                                health_check_interval=10)
        self._stopping = False
        self.handled = 0

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._stopping = True

    def run(self) -> None:
        pubsub = redis_clients.subscription(self._redis)
        pubsub.subscribe(self.topic)
        logger.info("relay worker subscribed to %s", self.topic)
        try:
            while not self._stopping:
                message = pubsub.get_message(timeout=POLL_INTERVAL)
                if message is None or message.get("type") != "message":
                    continue
                self.handled += 1
                outgoing = self.relay.process(message["data"])
                if outgoing is not None:
                    redis_clients.publish(self._redis, *outgoing)
        finally:
            pubsub.close()
            self._redis.close()
        logger.info("relay worker %s stopped after %d requests", self.topic, self.handled)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribe_topic", required=True)
    parser.add_argument("--fixtures", action="append", required=True,
                        help="a chat_fixtures JSON file (users with tokens, rooms with member ids); repeatable")
    parser.add_argument("--first-message-id", type=int, default=1)
    parser.add_argument("--message-id-step", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    relay = Relay(Directory.load(args.fixtures), os.environ.get("WORKER_RESPONSE_TOPIC") or "worker_response",
                  args.first_message_id, args.message_id_step)
    consumer = RelayConsumer(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0", args.subscribe_topic, relay,
                             redis_clients.cluster_from_env())
    signal.signal(signal.SIGTERM, consumer.request_stop)
    signal.signal(signal.SIGINT, consumer.request_stop)
    consumer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
