from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from . import tickets

        # A logout refuses its session's WebSocket tickets from then on.
        user_logged_out.connect(tickets.on_logout, dispatch_uid="chat.tickets.on_logout")
