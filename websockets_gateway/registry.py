"""Open connections, indexed by connection id and by user id: every lookup is O(1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Set as AbstractSet

from .connection import Connection


class ConnectionRegistry:
    def __init__(self, on_presence_change: Callable[[int], None] | None = None) -> None:
        self._by_id: dict[str, Connection] = {}
        # A user's connection here, or a set of them once there are two or more: most users have
        # one, and an empty set costs 216 bytes (about 1.3 % of an idle connection).
        self._by_user: dict[int, Connection | set[Connection]] = {}
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
            held = self._by_user.get(user_pk)
            if held is None:
                self._by_user[user_pk] = conn
                arrived = user_pk
            elif type(held) is set:
                held.add(conn)
            else:  # `conn` itself is not in the index: `_unindex_user` took it out above
                self._by_user[user_pk] = {held, conn}
        # A user's only connection that authenticates again as the same user left and came
        # back within this call: no change anyone else could have seen.
        if gone is not None and gone != arrived:
            self._presence_changed(gone)
        if arrived is not None and arrived != gone:
            self._presence_changed(arrived)

    def of_user(self, user_pk: int) -> AbstractSet[Connection]:
        held = self._by_user.get(user_pk)
        if held is None:
            return frozenset()
        return held if type(held) is set else frozenset((held,))

    def of_users(self, user_pks: Iterable[int]) -> Iterator[Connection]:
        by_user = self._by_user
        for user_pk in user_pks:
            held = by_user.get(user_pk)
            if held is None:
                continue
            if type(held) is set:
                yield from held
            else:
                yield held

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
        held = self._by_user.get(user_pk)
        if held is conn:
            del self._by_user[user_pk]
            return user_pk
        if type(held) is set and conn in held:
            held.discard(conn)
            if len(held) == 1:
                self._by_user[user_pk] = next(iter(held))
        return None

    def _presence_changed(self, user_pk: int) -> None:
        if self.on_presence_change is not None:
            self.on_presence_change(user_pk)
