"""The product's rule for the chat: direct messages stay within a team."""

from chat.policy import Policy


class TeamPolicy(Policy):
    def can_direct_message(self, user, other):
        return user.team == other.team
