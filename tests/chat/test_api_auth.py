"""The REST API's auth endpoints: a token for username and password, and the session's token for the chat page."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

# WhiteNoise warns that STATIC_ROOT does not exist before `collectstatic`; not this API's business.
pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

TOKEN_URL = "/api/auth/token/"
SESSION_TOKEN_URL = "/api/auth/session-token/"
PASSWORD = "a-long-test-password"


@pytest.fixture
def alice(db, settings):
    # A fast hasher: these tests are about the API, not about password hashing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return get_user_model().objects.create_user(username="alice", password=PASSWORD)


def test_token_for_username_and_password(client, alice):
    response = client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=alice).key}


def test_token_is_stable_across_logins(client, alice):
    first = client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}).json()["token"]
    second = client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}).json()["token"]
    assert first == second


@pytest.mark.parametrize("credentials", [
    {"username": "alice", "password": "wrong"},
    {"username": "nobody", "password": PASSWORD},
    {"username": "alice"},
])
def test_wrong_credentials_get_400_and_no_token(client, alice, credentials):
    response = client.post(TOKEN_URL, credentials)
    assert response.status_code == 400
    assert "token" not in response.json()
    assert not Token.objects.exists()


def test_session_token_needs_a_session_login(client, alice):
    response = client.get(SESSION_TOKEN_URL)
    assert response.status_code in (401, 403)
    assert "token" not in response.json()


def test_session_token_for_a_logged_in_user(client, alice):
    client.force_login(alice)
    response = client.get(SESSION_TOKEN_URL)
    assert response.status_code == 200
    assert response.json() == {"username": "alice", "token": Token.objects.get(user=alice).key}
    # A credential: never kept by a browser's or a proxy's cache.
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]


def test_session_token_after_password_login_matches_the_token_endpoint(client, alice):
    assert client.login(username="alice", password=PASSWORD)
    from_session = client.get(SESSION_TOKEN_URL).json()["token"]
    from_password = client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}).json()["token"]
    assert from_session == from_password
