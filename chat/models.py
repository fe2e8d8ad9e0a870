"""The chat's data: rooms and the messages posted in them."""

import uuid

from django.conf import settings
from django.db import models


class ChatRoom(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, blank=True)
    is_direct = models.BooleanField(default=False)
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="chat_rooms", blank=True)
    date_created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-date_created"]

    def __str__(self) -> str:
        return self.name or f"room {self.id.hex}"


class ChatMessage(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages")
    room = models.ForeignKey(ChatRoom, on_delete=models.CASCADE, related_name="messages")
    date_created = models.DateTimeField(auto_now_add=True, db_index=True)
    text = models.TextField()
    # The uuid of the client frame that created the message: a retried new_message
    # (same user, same uuid) finds this row instead of storing the text twice.
    client_uuid = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "client_uuid"], name="chat_message_unique_client_uuid"),
        ]
        indexes = [models.Index(fields=["room", "-id"], name="chat_message_room_recent")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.room_id}: {self.text[:40]}"
