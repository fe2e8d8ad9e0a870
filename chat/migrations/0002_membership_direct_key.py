"""Rooms get a through model for their members (with a read marker) and a direct-room key.

The many-to-many table stays where it is: the state moves to the `Membership` model on that
same table, then the new column is added to it.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(model_name="chatroom", name="users"),
                migrations.CreateModel(
                    name="Membership",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                                verbose_name="ID")),
                        ("room", models.ForeignKey(db_column="chatroom_id",
                                                   on_delete=django.db.models.deletion.CASCADE,
                                                   to="chat.chatroom")),
                        ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                                   to=settings.AUTH_USER_MODEL)),
                    ],
                    options={"db_table": "chat_chatroom_users", "unique_together": {("room", "user")}},
                ),
                migrations.AddField(
                    model_name="chatroom",
                    name="users",
                    field=models.ManyToManyField(blank=True, related_name="chat_rooms", through="chat.Membership",
                                                 to=settings.AUTH_USER_MODEL),
                ),
            ],
        ),
        migrations.AddField(
            model_name="membership",
            name="last_read_id",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="chatroom",
            name="direct_key",
            field=models.CharField(blank=True, editable=False, max_length=64, null=True, unique=True),
        ),
    ]
