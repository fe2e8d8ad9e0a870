from django.apps import AppConfig


class ExampleAppConfig(AppConfig):
    """A host project's app, as far as the chat sees it: it declares its own actions (chat_actions.py)."""

    name = "tests.example_app"
    label = "example_app"
