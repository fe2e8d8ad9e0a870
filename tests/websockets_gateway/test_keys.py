"""The shared Redis keys: one namespace per deployment, and one hash tag for all of its keys."""

from redis.crc import key_slot

from websockets_gateway.keys import DEFAULT_KEYS, Keys


def test_every_key_is_under_the_deployments_namespace_and_hash_tag():
    keys = Keys("staging_response")
    spelled = [keys.presence_gateway("gw-a-0.1f2e.3"), keys.presence_user(42), keys.catalogue,
               keys.worker_topics, keys.worker_heartbeat("chat.worker.host-12-ab")]
    assert spelled == ["chat:{staging_response}:presence:gateway:gw-a-0.1f2e.3",
                       "chat:{staging_response}:presence:user:42", "chat:{staging_response}:catalogue",
                       "chat:{staging_response}:workers", "chat:{staging_response}:worker:chat.worker.host-12-ab"]
    # One slot: a transaction or MGET over them stays on one node of a Redis Cluster.
    assert len({key_slot(key.encode()) for key in spelled}) == 1


def test_two_deployments_share_no_key():
    production, staging = DEFAULT_KEYS, Keys("staging_response")
    assert production.namespace == "worker_response"
    assert production.presence_user(1) != staging.presence_user(1)
    assert production.catalogue != staging.catalogue
