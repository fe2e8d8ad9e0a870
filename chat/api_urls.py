from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token

from . import api

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="api-token"),
    path("auth/session-token/", api.SessionToken.as_view(), name="api-session-token"),
]
