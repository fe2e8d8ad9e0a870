"""`chat.routing` on a real Redis Cluster: a batch's replies go to the gateway processes holding
their recipients (one SUNION per recipient list, in a cluster pipeline), not to the fallback topic."""

from __future__ import annotations

from chat.routing import ReplyRoutes
from scripts.cluster import LocalCluster
from tests.chat.conftest import online_on
from websockets_gateway import redis_clients
from websockets_gateway.keys import Keys

KEYS = Keys("cluster_routing_test")
FALLBACK = "cluster_routing_test"


def test_replies_go_to_the_holders_gateways_on_a_cluster(local_cluster: LocalCluster):
    client = redis_clients.sync_client(local_cluster.url, True)
    fallbacks: list[int] = []
    try:
        first = online_on(client, KEYS, "gw-1", 1, 2)
        second = online_on(client, KEYS, "gw-2", 3)
        routes = ReplyRoutes(KEYS, FALLBACK, on_fallback=fallbacks.append)
        assert routes.topics(client, [([1, 2], None), ([2, 3], "requester"), ([9], None)]) == [
            {first}, {first, second, "requester"}, set()]
    finally:
        client.close()
    assert fallbacks == []
