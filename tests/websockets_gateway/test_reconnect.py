"""The reconnect loops' shared pieces (reconnect.py): the backoff, the subscription probe and the
quiet close, each without Redis, a socket or a clock of its own."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from websockets_gateway.reconnect import (
    PROBE_INTERVAL, PROBE_TIMEOUT, RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX, Backoff, SubscriptionDead,
    SubscriptionProbe, closing_quietly,
)

logger = logging.getLogger("tests.reconnect")


# Backoff

def test_the_delays_double_from_the_first_up_to_the_cap():
    backoff = Backoff(0.1, 2.0, rng=lambda: 0.5)  # the middle of the jitter: the bare delays
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])


def test_the_jitter_spreads_each_delay_by_half_either_way():
    low = Backoff(1.0, 8.0, jitter=0.5, rng=lambda: 0.0)
    high = Backoff(1.0, 8.0, jitter=0.5, rng=lambda: 0.999999)
    assert [low.next_delay(), low.next_delay()] == pytest.approx([0.5, 1.0])
    assert [high.next_delay(), high.next_delay()] == pytest.approx([1.5, 3.0], rel=1e-5)


def test_a_delay_without_jitter_is_the_bare_one_and_still_doubles():
    backoff = Backoff(0.1, 2.0, rng=lambda: 0.0)
    assert backoff.next_delay(jittered=False) == 0.1
    assert backoff.current == 0.2


def test_current_is_the_next_bare_delay_and_reset_starts_over():
    backoff = Backoff(0.1, 2.0, rng=lambda: 0.5)
    assert backoff.current == 0.1
    for _ in range(10):
        backoff.next_delay()
    assert backoff.current == 2.0
    backoff.reset()
    assert backoff.current == 0.1
    assert backoff.next_delay() == pytest.approx(0.1)


def test_the_defaults_keep_a_process_back_within_seconds_of_redis():
    backoff = Backoff(rng=lambda: 0.999999)
    delays = [backoff.next_delay() for _ in range(20)]
    assert delays[0] <= 1.5 * RECONNECT_BACKOFF_FIRST
    assert max(delays) <= 1.5 * RECONNECT_BACKOFF_MAX < 5.0


@pytest.mark.parametrize("first, cap, jitter", [(0, 1, 0.5), (2, 1, 0.5), (0.1, 1, -0.1), (0.1, 1, 1.5)])
def test_a_backoff_that_makes_no_sense_is_refused(first, cap, jitter):
    with pytest.raises(ValueError):
        Backoff(first, cap, jitter)


# SubscriptionProbe

def test_a_quiet_subscription_is_due_one_ping_after_the_interval():
    probe = SubscriptionProbe(now=100.0, interval=5.0, timeout=5.0)
    assert not probe.ping_due(104.9)
    assert probe.ping_due(105.0)
    # Sent: no second PING while the first waits for its answer.
    assert not probe.ping_due(106.0)
    assert not probe.ping_due(110.0)  # exactly the timeout: not yet overdue


def test_an_unanswered_ping_past_the_timeout_means_a_dead_subscription():
    probe = SubscriptionProbe(now=0.0, interval=5.0, timeout=5.0)
    assert probe.ping_due(5.0)
    with pytest.raises(SubscriptionDead, match="no answer to a PING in 5s"):
        probe.ping_due(10.01)


def test_hearing_anything_answers_the_ping_and_restarts_the_interval():
    probe = SubscriptionProbe(now=0.0, interval=5.0, timeout=5.0)
    assert probe.ping_due(5.0)
    probe.heard(6.0)  # the pong, or any message
    assert not probe.ping_due(10.9)  # not overdue, nor due again before 5 s of silence
    assert probe.ping_due(11.0)


def test_a_subscription_that_keeps_talking_is_never_probed():
    probe = SubscriptionProbe(now=0.0, interval=5.0, timeout=5.0)
    for second in range(1, 60):
        probe.heard(float(second))
        assert not probe.ping_due(second + 0.5)


def test_the_probe_defaults_and_a_dead_subscription_is_a_connection_error():
    probe = SubscriptionProbe(now=0.0)
    assert (probe.interval, probe.timeout) == (PROBE_INTERVAL, PROBE_TIMEOUT)
    # What every reconnect loop catches (`except (RedisError, OSError)`): a lost connection.
    assert issubclass(SubscriptionDead, ConnectionError) and issubclass(SubscriptionDead, OSError)


# closing_quietly

def test_a_broken_connections_error_on_close_is_logged_at_debug_and_not_raised(caplog):
    with caplog.at_level(logging.DEBUG, logger="tests.reconnect"):
        with closing_quietly(logger, "closing a broken subscription"):
            raise RedisConnectionError("Connection reset by peer")
        with closing_quietly(logger, "closing a broken subscription"):
            raise ConnectionResetError("gone")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "closing a broken subscription: Connection reset by peer"),
        (logging.DEBUG, "closing a broken subscription: gone")]


def test_any_other_error_on_close_is_logged_with_its_traceback_and_not_raised(caplog):
    with closing_quietly(logger, "closing a broken subscription"):
        raise RuntimeError("a bug in the client library")
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.getMessage() == "closing a broken subscription failed"
    assert "RuntimeError: a bug in the client library" in caplog.text


def test_cancellation_goes_through_a_quiet_close():
    async def scenario():
        async def close():
            with closing_quietly(logger, "closing a broken subscription"):
                await asyncio.Event().wait()  # an aclose() that hangs

        task = asyncio.create_task(close())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait({task})
        assert task.cancelled()

    asyncio.run(scenario())


def test_a_clean_close_says_nothing(caplog):
    closed = []
    with caplog.at_level(logging.DEBUG, logger="tests.reconnect"):
        with closing_quietly(logger, "closing a broken subscription"):
            closed.append(True)
    assert closed == [True] and caplog.records == []
