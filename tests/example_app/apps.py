from django.apps import AppConfig


class ExampleAppConfig(AppConfig):
    """A host project's app, as far as the chat sees it: it declares its own actions (chat_actions.py)
    and has a layout of its own for the chat page (templates/example_app/layout.html)."""

    name = "tests.example_app"
    label = "example_app"
