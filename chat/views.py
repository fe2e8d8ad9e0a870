"""The chat page."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .models import ChatRoom


@login_required
def index(request: HttpRequest) -> HttpResponse:
    rooms = [{"id": room.pk.hex, "name": str(room)} for room in ChatRoom.objects.filter(users=request.user)]
    return render(request, "chat/index.html", {"rooms": rooms, "gateway_url": settings.GATEWAY_URL})
