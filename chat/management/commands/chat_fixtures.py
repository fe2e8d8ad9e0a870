"""`manage.py chat_fixtures --users N --rooms R --room-size M`: bulk test and demo data as JSON."""

import json
import random
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from chat.models import ChatRoom, Membership

BATCH = 500


class Command(BaseCommand):
    help = "Create users with tokens and rooms with members; print them as one JSON object."

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, required=True)
        parser.add_argument("--rooms", type=int, default=0)
        parser.add_argument("--room-size", type=int, default=2)
        parser.add_argument("--prefix", default=None, help="username prefix (default: random, so runs never clash)")
        parser.add_argument("--seed", type=int, default=None,
                            help="shuffle the users with this seed before handing out room places")

    def handle(self, *args, users: int, rooms: int, room_size: int, prefix: str | None, seed: int | None, **options):
        if users < 1 or rooms < 0:
            raise CommandError("--users must be at least 1 and --rooms at least 0")
        if rooms and not 1 <= room_size <= users:
            raise CommandError("--room-size must be between 1 and --users")
        prefix = prefix or f"u{secrets.token_hex(3)}"
        User = get_user_model()
        login = User.USERNAME_FIELD
        # Fixture users log in with their token; an unusable password costs no hashing.
        unusable = make_password(None)
        try:
            with transaction.atomic():
                created = User.objects.bulk_create(
                    [User(**{login: f"{prefix}_{n}"}, password=unusable) for n in range(1, users + 1)], batch_size=BATCH)
                if not all(user.pk for user in created):  # backends that return no ids on bulk insert
                    created = list(User.objects.filter(**{f"{login}__startswith": f"{prefix}_"}).order_by("pk"))
                tokens = Token.objects.bulk_create([Token(user=user, key=Token.generate_key()) for user in created],
                                                   batch_size=BATCH)
                room_rows = ChatRoom.objects.bulk_create(
                    [ChatRoom(name=f"{prefix} room {n}") for n in range(1, rooms + 1)], batch_size=BATCH)
                # Places are handed out round-robin, so every user is in about rooms * room_size / users
                # rooms: with --rooms N --room-size 1 every user gets a room of their own.
                order = list(created)
                if seed is not None:
                    random.Random(seed).shuffle(order)
                members = {room.pk: [order[(index * room_size + k) % users] for k in range(room_size)]
                           for index, room in enumerate(room_rows)}
                Membership.objects.bulk_create(
                    [Membership(room_id=room_pk, user_id=user.pk) for room_pk, room_users in members.items()
                     for user in room_users], batch_size=BATCH)
        except IntegrityError:
            # The one unique column the rows can clash on is the login name.
            raise CommandError(f"users named {prefix}_N already exist: choose another --prefix") from None
        output = {
            "users": [{"id": token.user.pk, "username": token.user.get_username(), "token": token.key} for token in tokens],
            "rooms": [{"id": room.pk.hex, "name": room.name, "members": [user.pk for user in members[room.pk]]}
                      for room in room_rows],
        }
        self.stdout.write(json.dumps(output))
