"""Actions of a host project's own, declared as any installed app declares them: the suite's proof
that an action needs no change to the gateway, the page's client or the chat package."""

from __future__ import annotations

from rest_framework import serializers

from chat.serializers import UserSerializer
from workers.actions import Request, action
from workers.envelopes import HandlerResult


class EchoFields(serializers.Serializer):
    text = serializers.CharField(max_length=200)
    times = serializers.IntegerField(min_value=1, max_value=3, default=1)


@action("echo", fields=EchoFields, retry=True)
def echo(request: Request) -> HandlerResult:
    """Answers the requester alone with its text, `times` times over, and who asked."""
    return HandlerResult(request.success(text=" ".join([request.params["text"]] * request.params["times"]),
                                         user=UserSerializer(request.user).data))
