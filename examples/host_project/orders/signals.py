"""The product hears the chat: every message stored, for its own audit log."""

import logging

logger = logging.getLogger("orders.audit")


def audit_message(sender, message, room_id, member_ids, **kwargs):
    logger.info("chat message %s by %s in room %s", message.pk, message.user.get_username(), room_id.hex)
