"""The per-connection token bucket, driven by a fake clock."""

from __future__ import annotations

import pytest

from websockets_gateway.ratelimit import TokenBucket

from .fakes import FakeClock


def _allowed(bucket, attempts):
    return sum(bucket.allow() for _ in range(attempts))


def test_a_full_bucket_allows_a_burst_then_refuses():
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    assert bucket.allow() is False


def test_tokens_refill_at_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert _allowed(bucket, 3) == 3
    clock.advance(0.5)  # 0.5 s at 2/s: one token
    assert bucket.allow() is True
    assert bucket.allow() is False
    clock.advance(1.0)  # two tokens
    assert _allowed(bucket, 5) == 2


def test_a_partial_token_accumulates_across_refused_attempts():
    clock = FakeClock()
    bucket = TokenBucket(rate=4.0, burst=1, clock=clock)
    assert bucket.allow() is True
    clock.advance(0.125)  # half a token
    assert bucket.allow() is False
    clock.advance(0.125)  # the other half
    assert bucket.allow() is True


def test_the_bucket_never_holds_more_than_burst():
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=2, clock=clock)
    clock.advance(3600.0)
    assert _allowed(bucket, 10) == 2
    assert bucket.tokens < 1


def test_idle_time_while_full_is_not_saved_up():
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=2, clock=clock)
    clock.advance(100.0)
    assert bucket.allow() is True
    assert bucket.tokens == pytest.approx(1.0)


def test_sustained_rate_matches_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=5.0, burst=5, clock=clock)
    assert _allowed(bucket, 5) == 5
    allowed = 0
    for _ in range(100):  # 10 s in 0.1 s steps, three attempts each step
        clock.advance(0.1)
        allowed += _allowed(bucket, 3)
    assert allowed == pytest.approx(50, abs=1)


def test_the_clock_is_the_injected_one():
    clock = FakeClock(now=50.0)
    bucket = TokenBucket(rate=1.0, burst=1, clock=clock)
    assert bucket.updated == 50.0
    bucket.allow()
    clock.advance(2.5)
    bucket.allow()
    assert bucket.updated == 52.5
