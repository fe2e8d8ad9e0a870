"""Settings of the benchmark's Django Channels comparison (`bench/channels_chat.py`): the
project's own, plus the channel layer Channels' documentation deploys with (channels_redis on
the stack's Redis). `CHANNEL_LAYER=pubsub` picks channels_redis's newer `RedisPubSubChannelLayer`
instead of `RedisChannelLayer` (`python -m bench --channels-layer pubsub`)."""

import os

from project.settings import *  # noqa: F401,F403  (the project's settings, unchanged)
from project.settings import CHAT

LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}

ASGI_APPLICATION = "bench.channels_chat.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": LAYERS[os.environ.get("CHANNEL_LAYER", "core")],
        # Its documented settings, but for two of redis-py's (8.x) defaults, each of which closed
        # consumers' WebSockets in the benchmark: its pool of 100 connections per process made
        # `group_send` raise MaxConnectionsError under load, and its 5 s socket timeout equals the
        # layer's 5 s BZPOPMIN, so an idle consumer's receive could time out. Measured at its best,
        # not at its defaults.
        "CONFIG": {"hosts": [{"address": CHAT["REDIS_URL"], "max_connections": 10_000, "socket_timeout": None}]},
    },
}
