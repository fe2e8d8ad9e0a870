"""The REST API's URLs, mounted at /api/: auth tokens and WebSocket tickets, rooms and messages, the
OpenAPI schema and its docs."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import api

# Room ids: 32 hex digits or the hyphenated form. `str`, not `uuid`, so that a malformed id gets
# the API's own 404 body (chat.fields.room_id), the same as a room the user may not see.
urlpatterns = [
    path("auth/token/", api.AuthToken.as_view(), name="api-token"),
    path("auth/ticket/", api.WebSocketTicket.as_view(), name="api-ticket"),
    path("rooms/", api.RoomList.as_view(), name="api-rooms"),
    path("rooms/<str:room_id>/", api.RoomDetail.as_view(), name="api-room"),
    path("rooms/<str:room_id>/members/", api.RoomMembers.as_view(), name="api-room-members"),
    path("rooms/<str:room_id>/leave/", api.RoomLeave.as_view(), name="api-room-leave"),
    path("rooms/<str:room_id>/messages/", api.RoomMessages.as_view(), name="api-room-messages"),
    path("rooms/<str:room_id>/read/", api.RoomRead.as_view(), name="api-room-read"),
    path("direct-messages/", api.DirectMessages.as_view(), name="api-direct-messages"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="chat:api-schema"), name="api-docs"),
]
