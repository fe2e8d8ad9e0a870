"""Open connections, indexed by connection id and by user id: every lookup is O(1)."""

from __future__ import annotations

from typing import Iterable, Iterator

from .connection import Connection


class ConnectionRegistry:
    def __init__(self) -> None:
        self._by_id: dict[str, Connection] = {}
        self._by_user: dict[int, set[Connection]] = {}

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
        self._unindex_user(conn)

    def set_session(self, conn: Connection, session_data: dict) -> None:
        """Replace a connection's session data and move it to its (new) user's index."""
        self._unindex_user(conn)
        conn.session_data = dict(session_data)
        user_pk = conn.user_pk
        if user_pk is not None and conn.conn_id in self._by_id:
            self._by_user.setdefault(user_pk, set()).add(conn)

    def of_user(self, user_pk: int) -> set[Connection]:
        return self._by_user.get(user_pk, set())

    def of_users(self, user_pks: Iterable[int]) -> Iterator[Connection]:
        for user_pk in user_pks:
            yield from self._by_user.get(user_pk, ())

    def user_count(self) -> int:
        return len(self._by_user)

    def _unindex_user(self, conn: Connection) -> None:
        user_pk = conn.user_pk
        if user_pk is None:
            return
        conns = self._by_user.get(user_pk)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_user[user_pk]
