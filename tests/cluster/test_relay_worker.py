"""The benchmark's relay worker (bench/relay_worker.py) on a real Redis Cluster: it subscribes to its
topic (sharded) and publishes its replies with SPUBLISH, as the real worker does, so that
`python -m bench --redis-cluster` can measure the baseline too."""

from __future__ import annotations

import json
import threading
import time

from bench.relay_worker import Directory, Relay, RelayConsumer
from scripts.cluster import LocalCluster
from scripts.stack import subscribed
from websockets_gateway import redis_clients

WAIT = 5.0


def next_message(subscription) -> dict:
    """The next published message (a read may also return None for a subscribe confirmation)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        message = subscription.get_message(timeout=max(0.0, deadline - time.monotonic()))
        if message is not None and message["type"] == "message":
            return message
    raise AssertionError("no reply published within the wait")


def test_the_relay_answers_over_sharded_pub_sub(local_cluster: LocalCluster):
    topic, reply_to = "bench_relay_cluster_test", "bench_relay_cluster_replies"
    directory = Directory([{"users": [{"id": 1, "username": "alice", "token": "tok-a"}], "rooms": []}])
    consumer = RelayConsumer(local_cluster.url, topic, Relay(directory, "bench_relay_cluster_responses"), cluster=True)
    thread = threading.Thread(target=consumer.run, daemon=True)
    client = redis_clients.sync_client(local_cluster.url, True, socket_timeout=WAIT)
    replies = redis_clients.subscription(client)
    try:
        replies.subscribe(reply_to)
        thread.start()
        deadline = time.monotonic() + WAIT
        while not subscribed(local_cluster.url, [topic], cluster=True):
            assert time.monotonic() < deadline, "the relay never subscribed (sharded) to its topic"
            time.sleep(0.05)
        request = {"uuid": "u-1", "action": "authenticate", "token": "tok-a", "session_data": {},
                   "request_id": "gw-1:1", "reply_to": reply_to}
        assert redis_clients.publish(client, topic, json.dumps(request)) == 1
        message = next_message(replies)
        envelope = json.loads(message["data"])
        assert envelope["request_id"] == "gw-1:1" and envelope["session_data"] == {"user_pk": 1}
        assert envelope["response"]["status"] == "success"
    finally:
        consumer.request_stop()
        thread.join(WAIT)
        replies.close()
        client.close()
    assert not thread.is_alive() and consumer.handled == 1
