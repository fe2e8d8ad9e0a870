"""`manage.py message_process_worker`: a thin command around `workers.consumer.Consumer`."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from scripts.stack import free_port
from workers.management.commands import message_process_worker
from workers.checkpoints import WalCheckpointer
from workers.discovery import unique_topic
from workers.metrics import WorkerMetrics


@pytest.fixture
def no_consumer(monkeypatch) -> None:
    """Fail at once, rather than block on a real Redis, if the command starts a consumer."""
    def refuse(*args, **kwargs):
        raise AssertionError("the command started a consumer")

    monkeypatch.setattr(message_process_worker, "Consumer", refuse)


def test_blank_subscribe_topic_is_refused(no_consumer):
    with pytest.raises(CommandError, match="subscribe_topic"):
        call_command("message_process_worker", "--subscribe_topic", "  ")


class FakeConsumer:
    started: list["FakeConsumer"] = []

    def __init__(self, redis_url: str, topic: str, response_topic: str, ttl: float, cluster: bool = False) -> None:
        self.args = (redis_url, topic, response_topic, ttl, cluster)
        self.calls: list[str] = []
        FakeConsumer.started.append(self)

    def install_signal_handlers(self) -> None:
        self.calls.append("install_signal_handlers")

    def run(self) -> None:
        self.calls.append("run")


@pytest.fixture
def fake_consumer(monkeypatch):
    monkeypatch.setattr(FakeConsumer, "started", [])
    monkeypatch.setattr(message_process_worker, "Consumer", FakeConsumer)
    return FakeConsumer


def test_runs_a_consumer_on_the_topic_with_the_settings(fake_consumer, settings):
    settings.CHAT = {**settings.CHAT, "REDIS_URL": "redis://example:6379/5", "WORKER_RESPONSE_TOPIC": "responses",
                     "WORKER_TTL": 4.5, "REDIS_CLUSTER": True}
    call_command("message_process_worker", "--subscribe_topic", "worker_process_9")
    [consumer] = fake_consumer.started
    assert consumer.args == ("redis://example:6379/5", "worker_process_9", "responses", 4.5, True)
    assert consumer.calls == ["install_signal_handlers", "run"]


def test_without_a_topic_each_worker_takes_a_unique_one_and_says_which(fake_consumer, caplog):
    with caplog.at_level("INFO"):
        call_command("message_process_worker")
        call_command("message_process_worker")
    first, second = (consumer.args[1] for consumer in fake_consumer.started)
    assert first != second
    assert first.startswith(unique_topic(token="x").rsplit("-", 1)[0] + "-")
    assert f"worker topic {first} (taken)" in caplog.text


def test_the_topic_file_holds_the_topic_taken(fake_consumer, tmp_path):
    path = tmp_path / "topic"
    path.write_text("an old topic\n")
    call_command("message_process_worker", "--topic-file", str(path))
    [consumer] = fake_consumer.started
    assert path.read_text() == consumer.args[1] + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["topic"]


def test_an_unwritable_topic_file_is_a_command_error(fake_consumer, tmp_path):
    with pytest.raises(CommandError, match="cannot write the topic"):
        call_command("message_process_worker", "--topic-file", str(tmp_path / "missing" / "topic"))
    assert fake_consumer.started == []


class ScrapingConsumer:
    """A consumer whose run() scrapes the metrics port the command opened for it, then returns."""

    instances: list["ScrapingConsumer"] = []
    # The port the test gave the command, if any.
    port: int | None = None

    def __init__(self, redis_url: str, topic: str, response_topic: str, ttl: float, cluster: bool = False) -> None:
        self.metrics = WorkerMetrics(topic)
        self.metrics.answered("authenticate", {"status": "success"}, 0.01)
        self.scraped = ""
        ScrapingConsumer.instances.append(self)

    def install_signal_handlers(self) -> None:
        pass

    def run(self) -> None:
        if self.port is not None:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
                self.scraped = response.read().decode()


@pytest.fixture
def scraping_consumer(monkeypatch):
    monkeypatch.setattr(ScrapingConsumer, "instances", [])
    monkeypatch.setattr(ScrapingConsumer, "port", None)
    monkeypatch.setattr(message_process_worker, "Consumer", ScrapingConsumer)
    return ScrapingConsumer


def test_metrics_port_serves_the_consumers_metrics_while_it_runs(scraping_consumer):
    port = free_port()
    scraping_consumer.port = port
    call_command("message_process_worker", "--subscribe_topic", "worker_process_9", "--metrics-port", str(port),
                 "--metrics-addr", "127.0.0.1")
    [consumer] = scraping_consumer.instances
    assert 'chat_worker_requests_total{action="authenticate",status="success"} 1.0' in consumer.scraped
    assert 'chat_worker_info{pid=' in consumer.scraped and 'topic="worker_process_9"' in consumer.scraped
    # Stopped with the consumer: nothing listens on the port any more (SO_REUSEADDR: the scrape's
    # connection may still be in TIME_WAIT, which is not a listener).
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_no_metrics_port_serves_nothing(scraping_consumer, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("metrics served without --metrics-port")

    monkeypatch.setattr(message_process_worker.metrics, "serve", refuse)
    call_command("message_process_worker", "--subscribe_topic", "worker_process_9")
    call_command("message_process_worker", "--subscribe_topic", "worker_process_9", "--metrics-port", "0")
    assert len(scraping_consumer.instances) == 2


def test_a_bad_or_busy_metrics_port_is_a_command_error(scraping_consumer):
    with pytest.raises(CommandError, match="not a port"):
        call_command("message_process_worker", "--subscribe_topic", "w", "--metrics-port", "70000")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(CommandError, match="cannot serve metrics"):
            call_command("message_process_worker", "--subscribe_topic", "w", "--metrics-port", str(port),
                         "--metrics-addr", "127.0.0.1")


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the WAL checkpointer is SQLite's alone")
def test_on_sqlite_the_wal_is_checkpointed_by_a_thread_while_the_consumer_runs(monkeypatch):
    # The requests' commits must not run the checkpoints (workers/checkpoints.py): a thread of the
    # worker's own does, from before the first request until the consumer returns.
    seen: list[bool] = []
    started: list[WalCheckpointer] = []
    make = WalCheckpointer.for_database

    def for_database(alias: str = "default") -> WalCheckpointer | None:
        checkpointer = make(alias)
        started.append(checkpointer)
        return checkpointer

    class Consumer:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def install_signal_handlers(self) -> None:
            pass

        def run(self) -> None:
            seen.append(started[0].running)

    monkeypatch.setattr(message_process_worker, "Consumer", Consumer)
    monkeypatch.setattr(message_process_worker.WalCheckpointer, "for_database", staticmethod(for_database))
    call_command("message_process_worker", "--subscribe_topic", "worker_process_9")
    [checkpointer] = started
    assert seen == [True]
    assert not checkpointer.running
