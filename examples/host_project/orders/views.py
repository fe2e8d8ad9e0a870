"""A view of the product that tells a user, live, that their order shipped."""

from django.http import JsonResponse
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import IsAuthenticated

from chat import publish


@api_view(["POST"])
@authentication_classes([TokenAuthentication, SessionAuthentication])
@permission_classes([IsAuthenticated])
def ship(request, order):
    # The product ships the order (its own business), then tells the buyer's open pages at once.
    publish.to_users([request.user.pk], "order_shipped", {"order": order})
    return JsonResponse({"order": order, "shipped": True})
