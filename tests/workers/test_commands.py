"""`manage.py message_process_worker`: a thin command around `workers.consumer.Consumer`."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from workers.management.commands import message_process_worker


@pytest.fixture
def no_consumer(monkeypatch) -> None:
    """Fail at once, rather than block on a real Redis, if the command starts a consumer."""
    def refuse(*args, **kwargs):
        raise AssertionError("the command started a consumer")

    monkeypatch.setattr(message_process_worker, "Consumer", refuse)


def test_subscribe_topic_is_required(no_consumer):
    with pytest.raises((CommandError, SystemExit)):
        call_command("message_process_worker")


def test_blank_subscribe_topic_is_refused(no_consumer):
    with pytest.raises(CommandError, match="subscribe_topic"):
        call_command("message_process_worker", "--subscribe_topic", "  ")


def test_runs_a_consumer_on_the_topic_with_the_settings(monkeypatch, settings):
    settings.REDIS_URL = "redis://example:6379/5"
    settings.WORKER_RESPONSE_TOPIC = "responses"
    started = []

    class FakeConsumer:
        def __init__(self, redis_url: str, topic: str, response_topic: str) -> None:
            self.args = (redis_url, topic, response_topic)
            self.calls: list[str] = []
            started.append(self)

        def install_signal_handlers(self) -> None:
            self.calls.append("install_signal_handlers")

        def run(self) -> None:
            self.calls.append("run")

    monkeypatch.setattr(message_process_worker, "Consumer", FakeConsumer)
    call_command("message_process_worker", "--subscribe_topic", "worker_process_9")
    [consumer] = started
    assert consumer.args == ("redis://example:6379/5", "worker_process_9", "responses")
    assert consumer.calls == ["install_signal_handlers", "run"]
