"""In-flight requests: gateway-prefixed ids, the per-connection bound, replies, deadlines, disconnects."""

from __future__ import annotations

import asyncio

import pytest

from websockets_gateway.requests import PendingRequests, TooManyInFlight

from .fakes import WAIT, make_connection, run


def _never(pending):
    raise AssertionError(f"request {pending.request_id} should not have timed out")


class TimeoutRecorder(list):
    """An on_timeout callback that records each expired request and sets `fired`."""

    def __init__(self) -> None:
        super().__init__()
        self.fired = asyncio.Event()

    def __call__(self, pending) -> None:
        self.append(pending)
        self.fired.set()


def test_ids_are_prefixed_by_the_gateway_and_unique():
    async def scenario():
        requests = PendingRequests("gw-abc", timeout=60, max_in_flight=100, on_timeout=_never)
        conns = [make_connection("c1"), make_connection("c2")]
        ids = [requests.start(conns[i % 2], {"uuid": f"u{i}"}).request_id for i in range(20)]
        assert len(set(ids)) == 20
        assert all(request_id.startswith("gw-abc:") for request_id in ids)
        assert all(requests.owns(request_id) for request_id in ids)
        assert len(requests) == 20

    run(scenario())


def test_the_same_client_uuid_twice_gets_two_request_ids():
    async def scenario():
        requests = PendingRequests("gw", timeout=60, max_in_flight=10, on_timeout=_never)
        conn = make_connection("c1")
        first = requests.start(conn, {"uuid": "same"})
        second = requests.start(conn, {"uuid": "same"})
        assert first.request_id != second.request_id
        assert requests.in_flight(conn) == {first.request_id, second.request_id}

    run(scenario())


@pytest.mark.parametrize(
    "request_id, owned",
    [
        ("gw-abc:1", True),
        ("gw-abc:anything", True),
        ("gw-abd:1", False),
        ("gw-abcd:1", False),  # a gateway whose id merely starts with ours
        ("gw-ab:1", False),
        ("gw-abc", False),
        ("", False),
        (None, False),
        (17, False),
        (["gw-abc:1"], False),
    ],
)
def test_owns(request_id, owned):
    requests = PendingRequests("gw-abc", timeout=60, max_in_flight=1, on_timeout=_never)
    assert requests.owns(request_id) is owned


def test_max_in_flight_is_a_per_connection_bound():
    async def scenario():
        requests = PendingRequests("gw", timeout=60, max_in_flight=2, on_timeout=_never)
        busy, other = make_connection("c1"), make_connection("c2")
        first = requests.start(busy, {"uuid": "1"})
        requests.start(busy, {"uuid": "2"})
        with pytest.raises(TooManyInFlight):
            requests.start(busy, {"uuid": "3"})
        assert len(requests.in_flight(busy)) == 2
        assert len(requests) == 2
        # Another connection has its own allowance.
        requests.start(other, {"uuid": "1"})
        # A reply frees a slot.
        requests.complete(first.request_id)
        requests.start(busy, {"uuid": "3"})
        assert len(requests.in_flight(busy)) == 2

    run(scenario())


def test_complete_returns_the_request_once_and_cancels_its_timer():
    async def scenario():
        requests = PendingRequests("gw", timeout=60, max_in_flight=4, on_timeout=_never)
        conn = make_connection("c1")
        pending = requests.start(conn, {"uuid": "u1", "action": "select_room", "room": "r"})
        assert pending.timer is not None and not pending.timer.cancelled()
        completed = requests.complete(pending.request_id)
        assert completed is pending
        assert completed.conn is conn
        assert completed.frame_echo == {"uuid": "u1", "action": "select_room", "room": "r"}
        assert pending.timer.cancelled()
        assert requests.in_flight(conn) == set()
        assert len(requests) == 0
        assert requests.complete(pending.request_id) is None

    run(scenario())


@pytest.mark.parametrize("request_id", ["gw:999", "other:1", None, 3, {"id": 1}])
def test_complete_of_an_unknown_or_non_string_id_is_none(request_id):
    async def scenario():
        requests = PendingRequests("gw", timeout=60, max_in_flight=4, on_timeout=_never)
        requests.start(make_connection("c1"), {"uuid": "u1"})
        assert requests.complete(request_id) is None
        assert len(requests) == 1

    run(scenario())


def test_a_completed_request_never_times_out():
    async def scenario():
        timed_out = TimeoutRecorder()
        fired = timed_out.fired
        requests = PendingRequests("gw", timeout=0.05, max_in_flight=4, on_timeout=timed_out)
        conn = make_connection("c1")
        early = requests.start(conn, {"uuid": "early"})
        late = requests.start(conn, {"uuid": "late"})
        requests.complete(early.request_id)
        # `early`'s deadline is not after `late`'s: had its timer survived, it would have fired first.
        await asyncio.wait_for(fired.wait(), WAIT)
        assert timed_out == [late]

    run(scenario())


def test_timeout_calls_on_timeout_once_and_forgets_the_request():
    async def scenario():
        timed_out = TimeoutRecorder()
        fired = timed_out.fired
        requests = PendingRequests("gw", timeout=0.05, max_in_flight=4, on_timeout=timed_out)
        conn = make_connection("c1")
        pending = requests.start(conn, {"uuid": "u1", "action": "authenticate"})
        await asyncio.wait_for(fired.wait(), WAIT)

        assert timed_out == [pending]
        assert len(requests) == 0
        assert requests.in_flight(conn) == set()
        # The reply that comes after the deadline finds nothing to complete.
        assert requests.complete(pending.request_id) is None
        # A second expiry of the same id (the timer firing twice) is a no-op.
        requests._expire(pending.request_id)
        assert timed_out == [pending]

    run(scenario())


def test_a_timed_out_request_frees_its_in_flight_slot():
    async def scenario():
        fired = asyncio.Event()
        requests = PendingRequests("gw", timeout=0.05, max_in_flight=1, on_timeout=lambda pending: fired.set())
        conn = make_connection("c1")
        requests.start(conn, {"uuid": "u1"})
        with pytest.raises(TooManyInFlight):
            requests.start(conn, {"uuid": "u2"})
        await asyncio.wait_for(fired.wait(), WAIT)
        assert requests.start(conn, {"uuid": "u2"}).request_id.startswith("gw:")

    run(scenario())


def test_drop_connection_forgets_all_of_its_requests_and_only_its_own():
    async def scenario():
        requests = PendingRequests("gw", timeout=60, max_in_flight=4, on_timeout=_never)
        gone, staying = make_connection("c1"), make_connection("c2")
        gone_requests = [requests.start(gone, {"uuid": f"g{i}"}) for i in range(3)]
        staying_request = requests.start(staying, {"uuid": "s"})

        requests.drop_connection(gone)

        assert requests.in_flight(gone) == set()
        assert len(requests) == 1
        for pending in gone_requests:
            assert pending.timer.cancelled()
            assert requests.complete(pending.request_id) is None
        assert requests.in_flight(staying) == {staying_request.request_id}
        assert requests.complete(staying_request.request_id) is staying_request

    run(scenario())


def test_a_connection_holds_a_set_of_ids_only_while_requests_wait():
    async def scenario():
        requests = PendingRequests("gw", timeout=60, max_in_flight=4, on_timeout=_never)
        conn = make_connection("c1")
        assert requests.in_flight(conn) == set() and requests.busy_connections == 0
        first = requests.start(conn, {"uuid": "1"})
        second = requests.start(conn, {"uuid": "2"})
        assert requests.in_flight(conn) == {first.request_id, second.request_id}
        assert requests.busy_connections == 1
        requests.complete(first.request_id)
        requests.complete(second.request_id)
        requests.complete("gw:999")  # unknown: nothing happens
        assert requests.in_flight(conn) == set() and requests.busy_connections == 0

    run(scenario())


def test_drop_connection_without_requests_is_harmless():
    async def scenario():
        requests = PendingRequests("gw", timeout=60, max_in_flight=4, on_timeout=_never)
        requests.drop_connection(make_connection("c1"))
        assert len(requests) == 0

    run(scenario())
