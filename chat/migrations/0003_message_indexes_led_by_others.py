"""Drop the messages' own indexes on `user` and on `room`: each leads another index already
(the unique (user, client_uuid), and (room, -id)), which serves lookups by user or room, and
every insert wrote both. Plain DROP INDEX on every backend: Django's AlterField would copy the
whole table twice on SQLite to do the same."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# The names Django gave these indexes (the same on SQLite and PostgreSQL).
INDEXES = {"user_id": "chat_chatmessage_user_id_fa615e65", "room_id": "chat_chatmessage_room_id_5d04fb68"}


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0002_membership_direct_key"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="chatmessage",
                    name="room",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="messages", to="chat.chatroom"),
                ),
                migrations.AlterField(
                    model_name="chatmessage",
                    name="user",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="chat_messages", to=settings.AUTH_USER_MODEL),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX "{name}" ON "chat_chatmessage" ("{column}")',
                )
                for column, name in INDEXES.items()
            ],
        ),
    ]
