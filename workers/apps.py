from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"

    def ready(self) -> None:
        from .actions import discover

        # The action registry: the chat's own actions and every installed app's chat_actions module.
        discover()
