from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"

    def ready(self):
        from chat import signals

        from .signals import audit_message

        signals.message_posted.connect(audit_message)
