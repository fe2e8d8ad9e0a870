"""`manage.py message_process_worker [--subscribe_topic NAME] [--metrics-port PORT]`: run one bus worker."""

import logging
import os
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from chat.conf import chat_settings
from workers import metrics
from workers.checkpoints import WalCheckpointer
from workers.consumer import Consumer
from workers.discovery import unique_topic

logger = logging.getLogger(__name__)


def write_topic_file(path: Path, topic: str) -> None:
    """Write `topic` to `path` whole or not at all (a health check may read it at any moment)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(topic + "\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class Command(BaseCommand):
    help = "Answer the gateway's requests published on one Redis pub/sub topic, registered for the gateways."

    def add_arguments(self, parser):
        parser.add_argument("--subscribe_topic", default=None,
                            help="the worker topic to subscribe to (default: a unique topic of its own)")
        parser.add_argument("--topic-file", type=Path, default=None,
                            help="write the topic to this file once taken (for a container's health check)")
        parser.add_argument("--metrics-port", type=int, default=0,
                            help="serve Prometheus metrics over HTTP on this port (default 0: not served)")
        parser.add_argument("--metrics-addr", default="0.0.0.0",
                            help="the address the metrics port listens on (default 0.0.0.0: every interface)")

    def handle(self, *args, subscribe_topic: str | None, topic_file: Path | None, metrics_port: int,
               metrics_addr: str, **options):
        if subscribe_topic is not None and not subscribe_topic.strip():
            raise CommandError("--subscribe_topic must name a topic (or be left out for a unique one)")
        if not 0 <= metrics_port <= 65535:
            raise CommandError(f"--metrics-port {metrics_port} is not a port number (0: no metrics)")
        topic = subscribe_topic if subscribe_topic is not None else unique_topic()
        logger.info("worker topic %s (%s)", topic, "given" if subscribe_topic is not None else "taken")
        if topic_file is not None:
            try:
                write_topic_file(topic_file, topic)
            except OSError as exc:
                raise CommandError(f"cannot write the topic to {topic_file}: {exc}") from exc
        consumer = Consumer(chat_settings.REDIS_URL, topic, chat_settings.WORKER_RESPONSE_TOPIC,
                            ttl=chat_settings.WORKER_TTL, cluster=chat_settings.REDIS_CLUSTER)
        server = None
        if metrics_port:
            try:
                server = metrics.serve(consumer.metrics, metrics_port, metrics_addr)
            except OSError as exc:
                raise CommandError(f"cannot serve metrics on {metrics_addr}:{metrics_port}: {exc}") from exc
        consumer.install_signal_handlers()
        # SQLite only: the WAL copied into the database beside the requests, not in their commits.
        checkpointer = WalCheckpointer.for_database()
        if checkpointer is not None:
            checkpointer.start()
        try:
            consumer.run()
        finally:
            if checkpointer is not None:
                checkpointer.stop()
            if server is not None:
                server.shutdown()
                server.server_close()
