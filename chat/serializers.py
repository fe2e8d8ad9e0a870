"""REST framework serializers: the protocol's message and user objects."""

from django.contrib.auth import get_user_model
from rest_framework import serializers

from .models import ChatMessage


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["username"]


class MessageSerializer(serializers.ModelSerializer):
    user = UserSerializer(read_only=True)
    room = serializers.SerializerMethodField()
    timestamp = serializers.SerializerMethodField()

    class Meta:
        model = ChatMessage
        fields = ["id", "user", "room", "timestamp", "text"]

    def get_room(self, message: ChatMessage) -> str:
        return message.room_id.hex

    def get_timestamp(self, message: ChatMessage) -> float:
        return message.date_created.timestamp()
