from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from . import policy, tickets
        from .conf import chat_settings

        # CHAT checked at start: a wrong key or value stops it here, naming the key.
        chat_settings.values()
        # The permission policy loaded at start too: a path that does not import stops it.
        policy.current()

        # A logout refuses its session's WebSocket tickets from then on.
        user_logged_out.connect(tickets.on_logout, dispatch_uid="chat.tickets.on_logout")
