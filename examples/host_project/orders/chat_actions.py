"""The product's own WebSocket action: declared here, in its own app, and answered by the chat's
workers with no change to the chat or its gateway."""

from rest_framework import serializers

from workers.actions import Request, action
from workers.envelopes import HandlerResult

from .models import ORDERS


class OrderFields(serializers.Serializer):
    order = serializers.IntegerField(min_value=1)


@action("order_status", fields=OrderFields, retry=True)
def order_status(request: Request) -> HandlerResult:
    order = request.params["order"]
    return HandlerResult(request.success(order=order, state=ORDERS.get(order, "unknown")))
