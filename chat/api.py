"""The REST API."""

from rest_framework.authentication import SessionAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class SessionToken(APIView):
    """The logged-in user's token, for the chat page to authenticate its WebSocket."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        token, _ = Token.objects.get_or_create(user=request.user)
        return Response({"username": request.user.get_username(), "token": token.key})
