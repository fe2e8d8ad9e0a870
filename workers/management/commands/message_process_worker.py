"""`manage.py message_process_worker --subscribe_topic NAME`: run one bus worker."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workers.consumer import Consumer


class Command(BaseCommand):
    help = "Answer the gateway's requests published on one Redis pub/sub topic."

    def add_arguments(self, parser):
        parser.add_argument("--subscribe_topic", required=True, help="the worker topic to subscribe to")

    def handle(self, *args, subscribe_topic: str, **options):
        if not subscribe_topic.strip():
            raise CommandError("--subscribe_topic must name a topic")
        consumer = Consumer(settings.REDIS_URL, subscribe_topic, settings.WORKER_RESPONSE_TOPIC)
        consumer.install_signal_handlers()
        consumer.run()
