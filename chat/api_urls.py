"""The REST API's URLs, mounted at /api/: auth tokens and WebSocket tickets, rooms and messages, the
OpenAPI schema and its docs."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import api

# Room ids: 32 hex digits or the hyphenated form. `str`, not `uuid`, so that a malformed id gets
# the API's own 404 body (chat.fields.room_id), the same as a room the user may not see; message
# ids alike (`str`, not `int`: chat.api.message_in_path).
#
# An emoji in a path is percent-encoded, and Django matches the decoded path: a "/" in an emoji
# (%2F) arrives as "/", which `str` refuses, and a newline (%0A) too, which `path` refuses. So the
# emoji is everything between "reactions/" and the final "/", any character, the empty string
# included (refused then as invalid_emoji, not as an unknown URL).
urlpatterns = [
    path("auth/token/", api.AuthToken.as_view(), name="api-token"),
    path("auth/ticket/", api.WebSocketTicket.as_view(), name="api-ticket"),
    path("rooms/", api.RoomList.as_view(), name="api-rooms"),
    path("rooms/<str:room_id>/", api.RoomDetail.as_view(), name="api-room"),
    path("rooms/<str:room_id>/members/", api.RoomMembers.as_view(), name="api-room-members"),
    path("rooms/<str:room_id>/leave/", api.RoomLeave.as_view(), name="api-room-leave"),
    path("rooms/<str:room_id>/messages/", api.RoomMessages.as_view(), name="api-room-messages"),
    path("rooms/<str:room_id>/read/", api.RoomRead.as_view(), name="api-room-read"),
    path("messages/<str:message_id>/", api.MessageDetail.as_view(), name="api-message"),
    re_path(r"^messages/(?P<message_id>[^/]+)/reactions/(?P<emoji>(?s:.*))/$", api.MessageReaction.as_view(),
            name="api-message-reaction"),
    path("direct-messages/", api.DirectMessages.as_view(), name="api-direct-messages"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="chat:api-schema"), name="api-docs"),
]
