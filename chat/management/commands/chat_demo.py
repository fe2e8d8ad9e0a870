"""`manage.py chat_demo`: a few known logins and rooms for a person to try the chat (idempotent)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

from chat.models import ChatMessage, ChatRoom

DEMO_USERS = ["alice", "bob", "carol"]
DEMO_PASSWORD = "chat-demo-password"
DEMO_ROOMS = {"General": DEMO_USERS, "Alice and Bob": ["alice", "bob"]}


class Command(BaseCommand):
    help = f"Create demo users {', '.join(DEMO_USERS)} (password {DEMO_PASSWORD!r}) and a few rooms."

    def handle(self, *args, **options):
        User = get_user_model()
        users = {}
        for username in DEMO_USERS:
            user, created = User.objects.get_or_create(**{User.USERNAME_FIELD: username})
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
            Token.objects.get_or_create(user=user)
            users[username] = user
        for name, members in DEMO_ROOMS.items():
            room = ChatRoom.objects.filter(name=name, is_direct=False).first()
            if room is None:
                room = ChatRoom.objects.create(name=name)
                room.users.set([users[m] for m in members])
                ChatMessage.objects.create(user=users[members[0]], room=room, text=f"Welcome to {name}!")
        self.stdout.write(f"Demo users: {', '.join(DEMO_USERS)} (password: {DEMO_PASSWORD})")
