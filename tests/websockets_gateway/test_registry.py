"""The connection registry: connections by id and by user, and how session changes move them."""

from __future__ import annotations

from websockets_gateway.registry import ConnectionRegistry

from .fakes import make_connection


def test_add_and_get_by_connection_id():
    registry = ConnectionRegistry()
    conn = make_connection("c1")
    registry.add(conn)
    assert len(registry) == 1
    assert registry.get("c1") is conn
    assert registry.get("c2") is None
    assert list(registry) == [conn]


def test_an_unauthenticated_connection_is_in_no_user_index():
    registry = ConnectionRegistry()
    registry.add(make_connection("c1"))
    assert registry.user_count() == 0
    assert list(registry.of_users([1, 2])) == []


def test_set_session_indexes_the_connection_by_user():
    registry = ConnectionRegistry()
    conn = make_connection("c1")
    registry.add(conn)
    registry.set_session(conn, {"user_pk": 7})
    assert conn.user_pk == 7
    assert registry.of_user(7) == {conn}
    assert list(registry.of_users([7])) == [conn]
    assert registry.user_count() == 1


def test_set_session_moves_the_connection_to_the_new_user():
    registry = ConnectionRegistry()
    conn = make_connection("c1")
    registry.add(conn)
    registry.set_session(conn, {"user_pk": 1})
    registry.set_session(conn, {"user_pk": 2})
    assert registry.of_user(1) == set()
    assert registry.of_user(2) == {conn}
    assert registry.user_count() == 1


def test_set_session_without_a_user_unindexes_the_connection():
    registry = ConnectionRegistry()
    conn = make_connection("c1")
    registry.add(conn)
    registry.set_session(conn, {"user_pk": 1})
    registry.set_session(conn, {})
    assert conn.user_pk is None
    assert registry.of_user(1) == set()
    assert registry.user_count() == 0
    assert registry.get("c1") is conn


def test_set_session_copies_the_session_data():
    registry = ConnectionRegistry()
    conn = make_connection("c1")
    registry.add(conn)
    session = {"user_pk": 1}
    registry.set_session(conn, session)
    session["user_pk"] = 2
    assert conn.user_pk == 1
    assert registry.of_user(1) == {conn}


def test_several_connections_per_user():
    registry = ConnectionRegistry()
    alice_phone, alice_laptop, bob = (make_connection(cid) for cid in ("c1", "c2", "c3"))
    for conn, user_pk in ((alice_phone, 1), (alice_laptop, 1), (bob, 2)):
        registry.add(conn)
        registry.set_session(conn, {"user_pk": user_pk})
    assert registry.of_user(1) == {alice_phone, alice_laptop}
    assert registry.of_user(2) == {bob}
    assert set(registry.of_users([1])) == {alice_phone, alice_laptop}
    assert set(registry.of_users([1, 2])) == {alice_phone, alice_laptop, bob}
    assert list(registry.of_users([3, 4])) == []
    assert list(registry.of_users([])) == []
    assert registry.user_count() == 2
    assert len(registry) == 3


def test_a_user_goes_from_one_connection_to_three_and_back():
    # One connection is held as itself, two or more as a set: each step must look the same.
    registry = ConnectionRegistry()
    tabs = [make_connection(f"c{i}") for i in range(3)]
    for count, conn in enumerate(tabs, start=1):
        registry.add(conn)
        registry.set_session(conn, {"user_pk": 1})
        registry.set_session(conn, {"user_pk": 1})  # authenticating again as the same user
        assert registry.of_user(1) == set(tabs[:count])
        assert sorted(c.conn_id for c in registry.of_users([1])) == [c.conn_id for c in tabs[:count]]
    for count in (2, 1, 0):
        registry.remove(tabs[count])
        assert registry.of_user(1) == set(tabs[:count])
        # A set has no order: the connections, each once, in any order.
        assert sorted(c.conn_id for c in registry.of_users([1])) == [c.conn_id for c in tabs[:count]]
    assert registry.user_count() == 0


def test_remove_forgets_the_connection_everywhere():
    registry = ConnectionRegistry()
    kept, removed = make_connection("c1"), make_connection("c2")
    for conn in (kept, removed):
        registry.add(conn)
        registry.set_session(conn, {"user_pk": 1})
    registry.remove(removed)
    assert registry.get("c2") is None
    assert len(registry) == 1
    assert registry.of_user(1) == {kept}
    assert removed not in set(registry.of_users([1]))
    assert removed not in list(registry)


def test_removing_a_users_last_connection_drops_the_user():
    registry = ConnectionRegistry()
    conn = make_connection("c1")
    registry.add(conn)
    registry.set_session(conn, {"user_pk": 1})
    registry.remove(conn)
    assert registry.user_count() == 0
    assert list(registry.of_users([1])) == []


def test_remove_is_idempotent_and_ignores_unknown_connections():
    registry = ConnectionRegistry()
    conn = make_connection("c1")
    registry.add(conn)
    registry.remove(make_connection("never-added"))
    registry.remove(conn)
    registry.remove(conn)
    assert len(registry) == 0


def test_a_removed_connection_is_not_reindexed_by_a_late_session_change():
    # A reply may carry session data for a connection that closed while the worker worked.
    registry = ConnectionRegistry()
    conn = make_connection("c1")
    registry.add(conn)
    registry.remove(conn)
    registry.set_session(conn, {"user_pk": 1})
    assert registry.of_user(1) == set()
    assert registry.user_count() == 0


def test_iterating_is_a_snapshot_so_connections_can_be_removed_meanwhile():
    registry = ConnectionRegistry()
    conns = [make_connection(f"c{i}") for i in range(5)]
    for conn in conns:
        registry.add(conn)
    for conn in registry:
        registry.remove(conn)
    assert len(registry) == 0


class PresenceChanges:
    """Records the registry's presence hook calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, user_pk: int) -> None:
        self.calls.append(user_pk)


def test_the_presence_hook_fires_on_a_users_first_and_last_connection_only():
    changes = PresenceChanges()
    registry = ConnectionRegistry(on_presence_change=changes)
    tabs = [make_connection(f"c{i}") for i in range(3)]
    for conn in tabs:
        registry.add(conn)
        registry.set_session(conn, {"user_pk": 1})
    assert changes.calls == [1]
    registry.remove(tabs[0])
    registry.remove(tabs[1])
    assert changes.calls == [1]
    registry.remove(tabs[2])
    assert changes.calls == [1, 1]
    registry.remove(tabs[2])
    assert changes.calls == [1, 1]


def test_the_presence_hook_on_reauthentication():
    changes = PresenceChanges()
    registry = ConnectionRegistry(on_presence_change=changes)
    conn = make_connection("c1")
    registry.add(conn)
    registry.set_session(conn, {"user_pk": 1})
    registry.set_session(conn, {"user_pk": 1})  # the same user again: nothing changed
    assert changes.calls == [1]
    registry.set_session(conn, {"user_pk": 2})  # moved: 1 left, 2 arrived
    assert changes.calls == [1, 1, 2]
    registry.set_session(conn, {})  # signed out
    assert changes.calls == [1, 1, 2, 2]


def test_the_presence_hook_ignores_anonymous_and_removed_connections():
    changes = PresenceChanges()
    registry = ConnectionRegistry(on_presence_change=changes)
    anonymous = make_connection("c1")
    registry.add(anonymous)
    registry.remove(anonymous)
    gone = make_connection("c2")
    registry.add(gone)
    registry.remove(gone)
    registry.set_session(gone, {"user_pk": 5})  # a late reply for a closed connection
    registry.remove(gone)
    assert changes.calls == []


def test_user_pks_is_a_snapshot_of_the_users_with_connections():
    registry = ConnectionRegistry()
    for conn_id, user_pk in (("c1", 1), ("c2", 1), ("c3", 2)):
        conn = make_connection(conn_id)
        registry.add(conn)
        registry.set_session(conn, {"user_pk": user_pk})
    snapshot = registry.user_pks()
    registry.remove(registry.get("c3"))
    assert sorted(snapshot) == [1, 2]
    assert registry.user_pks() == [1]
