"""The REST API: the chat for clients that hold no WebSocket, with the WebSocket protocol's rules.

The views are thin: the domain functions (`chat.rooms`, `chat.services`, `chat.reading`) parse the
fields and refuse with the protocol's error codes (see `chat.api_errors` for their HTTP status);
every change is then published live (`chat.events`), as if it had been made over the WebSocket.
Bodies are JSON objects.
"""

from __future__ import annotations

from typing import Any

from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import JSONParser
from rest_framework.permissions import SAFE_METHODS, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import api_schema, errors, events, fields, reactions, reading, rooms, services, throttles, tickets
from .api_errors import ChatErrorResponses
from .conf import chat_settings
from .pagination import MessageCursorPagination
from .serializers import MessageSerializer, RoomSerializer

ROOMS_TAG = "rooms"
MESSAGES_TAG = "messages"

ROOM_ID = OpenApiParameter("room_id", str, OpenApiParameter.PATH,
                           description="The room's id: 32 hex digits, or the hyphenated UUID form.")
ERROR_400 = OpenApiResponse(api_schema.ChatErrorResponse, description="A field is missing, of the wrong type or out "
                            "of range (`invalid_message_format`), or refused (`empty_text`, `text_too_long`, "
                            "`invalid_user`, …).")
ERROR_403 = OpenApiResponse(api_schema.ChatErrorResponse, description="`forbidden`: the project's permission policy "
                            "(`CHAT[\"POLICY\"]`) refuses it; nothing is stored.")
ERROR_404 = OpenApiResponse(api_schema.ChatErrorResponse, description="`invalid_room_id`: no such room, or the user "
                            "is not a member of it (the same answer).")


class AuthToken(ObtainAuthToken):
    """The user's REST framework token, for API clients: POST with username and password gets it
    (made on first use, then the same one until deleted); DELETE revokes it, and the next POST
    makes a new one (rotation)."""

    def get_permissions(self) -> list[Any]:
        return [IsAuthenticated()] if self.request.method == "DELETE" else []

    def get_throttles(self) -> list[Any]:
        if self.request.method == "POST":
            return [throttles.LoginRateThrottle()]
        return [throttles.WriteRateThrottle()] if self.request.method == "DELETE" else []

    @extend_schema(tags=["auth"], request=AuthTokenSerializer, responses=api_schema.TokenResponse,
                   summary="The user's token, for username and password")
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().post(request, *args, **kwargs)

    @extend_schema(tags=["auth"], request=None,
                   responses={204: OpenApiResponse(description="The token is deleted: requests with it get 401.")},
                   summary="Revoke the user's token (authenticated by it, or by a session)")
    def delete(self, request: Request) -> Response:
        Token.objects.filter(user=request.user).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebSocketTicket(APIView):
    """A short-lived ticket (chat.tickets) for a logged-in page to authenticate its WebSocket with:
    the page never holds the user's permanent token."""

    authentication_classes = (SessionAuthentication,)
    permission_classes = (IsAuthenticated,)

    # A credential: no browser or proxy cache may keep it.
    @method_decorator(never_cache)
    @extend_schema(tags=["auth"], request=None, responses=api_schema.TicketResponse,
                   summary="A WebSocket ticket for the session's user (session and CSRF token only)")
    def post(self, request: Request) -> Response:
        ticket = tickets.issue(request.user, request.session.session_key)
        return Response({"ticket": ticket, "expires_in": chat_settings.TICKET_MAX_AGE})


class ChatView(ChatErrorResponses, GenericAPIView):
    """The chat endpoints' base: JSON bodies, authenticated users, domain errors as error bodies."""

    parser_classes = (JSONParser,)
    permission_classes = (IsAuthenticated,)

    def body(self) -> dict[str, Any]:
        """The request's JSON object (an empty body: {})."""
        data = self.request.data
        if not isinstance(data, dict):
            raise errors.InvalidMessageFormat("The request body must be a JSON object")
        return data

    def get_throttles(self) -> list[Any]:
        # Writes only, each user at the WebSocket's frame rate; reads are not counted.
        return [] if self.request.method in SAFE_METHODS else [throttles.WriteRateThrottle()]

    def client_uuid(self, body: dict[str, Any]) -> str | None:
        # Checked before anything is stored.
        return fields.client_uuid(body.get("uuid"))


class RoomList(ChatView):
    """The user's rooms, in the list_rooms form of the WebSocket protocol."""

    @extend_schema(tags=[ROOMS_TAG], responses=RoomSerializer(many=True),
                   summary="The user's rooms, the one with the newest activity first")
    def get(self, request: Request) -> Response:
        return Response(RoomSerializer(rooms.list_rooms(request.user), many=True).data)

    @extend_schema(tags=[ROOMS_TAG], request=api_schema.CreateRoomRequest,
                   responses={201: RoomSerializer, 400: ERROR_400, 403: ERROR_403},
                   summary="Create a room of the user and the named users")
    def post(self, request: Request) -> Response:
        body = self.body()
        client_uuid = self.client_uuid(body)
        summary = rooms.create_room(request.user, body.get("name"), body.get("members", []))
        events.room_changed("create_room", summary, client_uuid, request.path)
        return Response(RoomSerializer(summary).data, status=status.HTTP_201_CREATED)


class RoomDetail(ChatView):
    """One of the user's rooms."""

    @extend_schema(parameters=[ROOM_ID], tags=[ROOMS_TAG], responses={200: RoomSerializer, 404: ERROR_404}, summary="One room")
    def get(self, request: Request, room_id: str) -> Response:
        return Response(RoomSerializer(rooms.room_summary(request.user, room_id)).data)


class RoomMembers(ChatView):
    """The members of a room the user is a member of."""

    @extend_schema(parameters=[ROOM_ID], tags=[ROOMS_TAG], request=api_schema.AddMembersRequest,
                   responses={200: RoomSerializer, 400: ERROR_400, 403: ERROR_403, 404: ERROR_404},
                   summary="Add users to a room (a direct room takes no one)",
                   description="The room in the answer is as its newcomers see it (`unread_count` 0), the "
                               "same body as the live `add_members` event.")
    def post(self, request: Request, room_id: str) -> Response:
        body = self.body()
        client_uuid = self.client_uuid(body)
        summary = rooms.add_members(request.user, room_id, body.get("members"))
        events.room_changed("add_members", summary, client_uuid, request.path)
        return Response(RoomSerializer(summary).data)


class RoomLeave(ChatView):
    """The user stops being a member of a room."""

    @extend_schema(parameters=[ROOM_ID], tags=[ROOMS_TAG], request=api_schema.LeaveRoomRequest,
                   responses={204: OpenApiResponse(description="Left the room."), 400: ERROR_400, 404: ERROR_404},
                   summary="Leave a room")
    def post(self, request: Request, room_id: str) -> Response:
        client_uuid = self.client_uuid(self.body())
        departure = rooms.leave_room(request.user, room_id)
        events.room_left(departure, request.user, client_uuid, request.path)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RoomMessages(ChatView):
    """The messages of a room the user is a member of."""

    pagination_class = MessageCursorPagination

    @extend_schema(parameters=[ROOM_ID], tags=[MESSAGES_TAG], responses={200: MessageSerializer(many=True), 404: ERROR_404},
                   summary="The room's messages, newest first, a page at a time")
    def get(self, request: Request, room_id: str) -> Response:
        room = services.member_room(request.user, room_id)
        page = self.paginate_queryset(room.messages.select_related("user"))
        reactions.load(page)
        return self.get_paginated_response(MessageSerializer(page, many=True).data)

    @extend_schema(parameters=[ROOM_ID], tags=[MESSAGES_TAG], request=api_schema.PostMessageRequest,
                   responses={201: MessageSerializer, 200: OpenApiResponse(MessageSerializer, description=(
                       "A retry: a message with this uuid was stored before; this is it.")),
                       400: ERROR_400, 403: ERROR_403, 404: ERROR_404},
                   summary="Post a message to a room")
    def post(self, request: Request, room_id: str) -> Response:
        body = self.body()
        client_uuid = self.client_uuid(body)
        posted = services.post_message(request.user, room_id, body.get("text"), client_uuid)
        events.message_posted("new_message", posted, client_uuid, request.path)
        return message_response(posted)


class DirectMessages(ChatView):
    """Messages between two users, in the one direct room of the two (made on first use)."""

    @extend_schema(tags=[MESSAGES_TAG], request=api_schema.DirectMessageRequest,
                   responses={201: MessageSerializer, 200: OpenApiResponse(MessageSerializer, description=(
                       "A retry: a message with this uuid was stored before; this is it.")), 400: ERROR_400,
                       403: ERROR_403},
                   summary="Send a message to another user, in the direct room of the two")
    def post(self, request: Request) -> Response:
        body = self.body()
        client_uuid = self.client_uuid(body)
        posted = rooms.direct_message(request.user, body.get("to"), body.get("text"), client_uuid)
        events.message_posted("direct_message", posted, client_uuid, request.path)
        return message_response(posted)


class RoomRead(ChatView):
    """How far the user has read a room."""

    @extend_schema(parameters=[ROOM_ID], tags=[MESSAGES_TAG], request=api_schema.MarkReadRequest,
                   responses={200: api_schema.ReadMarkResponse, 400: ERROR_400, 404: ERROR_404},
                   summary="Mark the room read up to a message",
                   description="The mark only moves forward, and never past the room's newest message. "
                               "The user's WebSocket connections get the `mark_read` reply live.")
    def post(self, request: Request, room_id: str) -> Response:
        body = self.body()
        client_uuid = self.client_uuid(body)
        room_uuid = fields.room_id(room_id)
        mark = reading.mark_read(request.user, room_uuid.hex, body.get("message"))
        events.read_marked(request.user, room_uuid, body["message"], mark, client_uuid, request.path)
        return Response({"room": room_uuid.hex, "last_read_id": mark.last_read_id, "unread_count": mark.unread_count})


def message_response(posted: services.PostedMessage) -> Response:
    # 201 for a message stored now; 200 for a retry, which answers the message stored the first time.
    return Response(MessageSerializer(posted.message).data,
                    status=status.HTTP_201_CREATED if posted.created else status.HTTP_200_OK)
