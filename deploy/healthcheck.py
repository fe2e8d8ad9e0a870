"""Container health checks for docker-compose.yml: exit 0 when the part is healthy, 1 otherwise.

    python deploy/healthcheck.py web http://127.0.0.1:8000/login/
    python deploy/healthcheck.py gateway http://127.0.0.1:8080/healthz
    python deploy/healthcheck.py worker worker_process_1
    python deploy/healthcheck.py worker @/tmp/chat-worker-topic

A worker's target is its topic, or `@FILE`: the file its `--topic-file` wrote the topic to (a
worker that took a unique topic of its own, as compose's scaled workers do).

Standard library and redis-py only (both in the image); one line on stderr says why a check failed.
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.parse

TIMEOUT = 4.0


def web_host(allowed_hosts: str) -> str:
    """A Host header that Django's ALLOWED_HOSTS accepts, so the check does not fail with 400
    once ALLOWED_HOSTS names only the public host (as it must in production)."""
    for entry in (item.strip() for item in allowed_hosts.split(",")):
        if not entry:
            continue
        if entry == "*":
            return "localhost"
        # ".example.com" allows example.com and every subdomain.
        return entry.lstrip(".")
    return "localhost"


def get(url: str, headers: dict[str, str]) -> int:
    """The status of one GET; redirects are not followed (a redirect is not healthy)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=TIMEOUT)
    try:
        connection.request("GET", parts.path or "/", headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def check_web(url: str, env: dict[str, str]) -> str | None:
    # X-Forwarded-Proto: https, as the load balancer sends it (SECURE_PROXY_SSL_HEADER), so that
    # SECURE_SSL_REDIRECT answers the page and not a redirect to an https port nobody serves here.
    status = get(url, {"Host": web_host(env.get("ALLOWED_HOSTS") or "localhost"), "X-Forwarded-Proto": "https"})
    return None if status == 200 else f"GET {url} answered {status}"


def check_gateway(url: str, env: dict[str, str]) -> str | None:
    # 200 while the gateway is subscribed to Redis, 503 otherwise (docs/protocol.md).
    status = get(url, {})
    return None if status == 200 else f"GET {url} answered {status}"


def check_worker(target: str, env: dict[str, str]) -> str | None:
    import redis

    if target.startswith("@"):
        try:
            with open(target[1:]) as file:
                topic = file.read().strip()
        except FileNotFoundError:
            return f"no topic yet: {target[1:]} does not exist (the worker has not started)"
        if not topic:
            return f"{target[1:]} names no topic"
    else:
        topic = target

    url = env.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    # As websockets_gateway/redis_clients.py does (this script imports nothing of the project): on
    # a Redis Cluster a worker's subscription is sharded, counted by the master of its slot.
    if (env.get("REDIS_CLUSTER") or "").strip().lower() in {"1", "true", "yes", "on"}:
        cluster = redis.RedisCluster.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        try:
            counts = cluster.pubsub_shardnumsub(topic, target_nodes=cluster.get_node_from_key(topic))
        finally:
            cluster.close()
    else:
        client = redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        try:
            counts = client.pubsub_numsub(topic)
        finally:
            client.close()
    subscribers = dict(counts).get(topic.encode(), 0)
    return None if subscribers >= 1 else f"no subscriber on {topic}"


CHECKS = {"web": check_web, "gateway": check_gateway, "worker": check_worker}


def main(argv: list[str], env: dict[str, str]) -> int:
    if len(argv) != 2 or argv[0] not in CHECKS:
        print("usage: healthcheck.py web URL | gateway URL | worker TOPIC|@FILE", file=sys.stderr)
        return 2
    try:
        problem = CHECKS[argv[0]](argv[1], env)
    except Exception as exc:  # the check's boundary: any failure is "unhealthy", said in one line
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], dict(os.environ)))
