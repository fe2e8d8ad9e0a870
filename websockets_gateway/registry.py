"""Open connections, indexed by connection id and by user id: every lookup is O(1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from .connection import Connection


class ConnectionRegistry:
    def __init__(self, on_presence_change: Callable[[int], None] | None = None) -> None:
        self._by_id: dict[str, Connection] = {}
        self._by_user: dict[int, set[Connection]] = {}
        # Called with a user id whenever that user's number of authenticated connections here
        # goes from 0 to 1 or from 1 to 0 (O(1), synchronously): the presence writer's hook.
        self.on_presence_change = on_presence_change

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._by_id.values()))

    def add(self, conn: Connection) -> None:
        self._by_id[conn.conn_id] = conn

    def get(self, conn_id: str) -> Connection | None:
        return self._by_id.get(conn_id)

    def remove(self, conn: Connection) -> None:
        self._by_id.pop(conn.conn_id, None)
        gone = self._unindex_user(conn)
        if gone is not None:
            self._presence_changed(gone)

    def set_session(self, conn: Connection, session_data: dict) -> None:
        """Replace a connection's session data and move it to its (new) user's index."""
        gone = self._unindex_user(conn)
        conn.session_data = dict(session_data)
        arrived = None
        user_pk = conn.user_pk
        if user_pk is not None and conn.conn_id in self._by_id:
            conns = self._by_user.get(user_pk)
            if conns is None:
                conns = self._by_user[user_pk] = set()
                arrived = user_pk
            conns.add(conn)
        # A user's only connection that authenticates again as the same user left and came
        # back within this call: no change anyone else could have seen.
        if gone is not None and gone != arrived:
            self._presence_changed(gone)
        if arrived is not None and arrived != gone:
            self._presence_changed(arrived)

    def of_user(self, user_pk: int) -> set[Connection]:
        return self._by_user.get(user_pk, set())

    def of_users(self, user_pks: Iterable[int]) -> Iterator[Connection]:
        for user_pk in user_pks:
            yield from self._by_user.get(user_pk, ())

    def user_count(self) -> int:
        return len(self._by_user)

    def user_pks(self) -> list[int]:
        """A snapshot of the users with at least one connection here: O(users), not for a hot path."""
        return list(self._by_user)

    def _unindex_user(self, conn: Connection) -> int | None:
        """Take `conn` out of its user's index; the user id if that was the user's last connection."""
        user_pk = conn.user_pk
        if user_pk is None:
            return None
        conns = self._by_user.get(user_pk)
        if conns is not None and conn in conns:
            conns.discard(conn)
            if not conns:
                del self._by_user[user_pk]
                return user_pk
        return None

    def _presence_changed(self, user_pk: int) -> None:
        if self.on_presence_change is not None:
            self.on_presence_change(user_pk)
