"""The chat's URLs, for a host project's `path("chat/", include("chat.urls"))`: the page, and the REST
API under `api/` (chat/api_urls.py), in the `chat` namespace."""

from django.urls import include, path

from . import views

app_name = "chat"
urlpatterns = [
    path("", views.index, name="index"),
    path("api/", include("chat.api_urls")),
]
