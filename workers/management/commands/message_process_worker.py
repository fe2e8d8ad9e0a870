"""`manage.py message_process_worker --subscribe_topic NAME [--metrics-port PORT]`: run one bus worker."""

from django.core.management.base import BaseCommand, CommandError

from chat.conf import chat_settings
from workers import metrics
from workers.consumer import Consumer


class Command(BaseCommand):
    help = "Answer the gateway's requests published on one Redis pub/sub topic."

    def add_arguments(self, parser):
        parser.add_argument("--subscribe_topic", required=True, help="the worker topic to subscribe to")
        parser.add_argument("--metrics-port", type=int, default=0,
                            help="serve Prometheus metrics over HTTP on this port (default 0: not served)")
        parser.add_argument("--metrics-addr", default="0.0.0.0",
                            help="the address the metrics port listens on (default 0.0.0.0: every interface)")

    def handle(self, *args, subscribe_topic: str, metrics_port: int, metrics_addr: str, **options):
        if not subscribe_topic.strip():
            raise CommandError("--subscribe_topic must name a topic")
        if not 0 <= metrics_port <= 65535:
            raise CommandError(f"--metrics-port {metrics_port} is not a port number (0: no metrics)")
        consumer = Consumer(chat_settings.REDIS_URL, subscribe_topic, chat_settings.WORKER_RESPONSE_TOPIC,
                            cluster=chat_settings.REDIS_CLUSTER)
        server = None
        if metrics_port:
            try:
                server = metrics.serve(consumer.metrics, metrics_port, metrics_addr)
            except OSError as exc:
                raise CommandError(f"cannot serve metrics on {metrics_addr}:{metrics_port}: {exc}") from exc
        consumer.install_signal_handlers()
        try:
            consumer.run()
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
