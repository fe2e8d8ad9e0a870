"""Permission policies for the tests (CHAT["POLICY"]): each refuses one decision, or records them."""

from __future__ import annotations

from typing import Any

from chat.policy import Policy


class NoPosting(Policy):
    def can_post(self, user, room) -> bool:
        return False


class NoNewRooms(Policy):
    def can_create_room(self, user, members) -> bool:
        return False


class NoNewMembers(Policy):
    def can_add_members(self, user, room, new_members) -> bool:
        return False


class NoDirectMessages(Policy):
    def can_direct_message(self, user, other) -> bool:
        return False


class BobIsMuted(Policy):
    """Refuses bob's messages alone: a batch's other messages are stored."""

    def can_post(self, user, room) -> bool:
        return user.username != "bob"


class Recording(Policy):
    """Allows everything, and records what it was asked, with its arguments."""

    asked: list[tuple[str, Any, ...]] = []

    def can_post(self, user, room) -> bool:
        self.asked.append(("can_post", user, room))
        return True

    def can_create_room(self, user, members) -> bool:
        self.asked.append(("can_create_room", user, list(members)))
        return True

    def can_add_members(self, user, room, new_members) -> bool:
        self.asked.append(("can_add_members", user, room, list(new_members)))
        return True

    def can_direct_message(self, user, other) -> bool:
        self.asked.append(("can_direct_message", user, other))
        return True


class Incomplete:
    """Not a policy: it lacks three of the four decisions."""

    def can_post(self, user, room) -> bool:
        return True


NOT_A_CLASS = Policy()
