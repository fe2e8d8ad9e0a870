"""The REST API's auth endpoints: a token for username and password, revoked and rotated with DELETE;
a short-lived WebSocket ticket for a logged-in page; the throttles on logins and writes."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.throttling import SimpleRateThrottle

from chat import errors, throttles, tickets

# WhiteNoise warns that STATIC_ROOT does not exist before `collectstatic`; not this API's business.
pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

TOKEN_URL = "/api/auth/token/"
TICKET_URL = "/api/auth/ticket/"
ROOMS_URL = "/api/rooms/"
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


def test_a_deleted_token_is_refused_and_the_next_login_gets_a_new_one(client, alice):
    old = client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}).json()["token"]
    response = client.delete(TOKEN_URL, HTTP_AUTHORIZATION=f"Token {old}")
    assert response.status_code == 204
    assert not Token.objects.filter(user=alice).exists()
    assert client.get(ROOMS_URL, HTTP_AUTHORIZATION=f"Token {old}").status_code == 401
    assert client.delete(TOKEN_URL, HTTP_AUTHORIZATION=f"Token {old}").status_code == 401
    new = client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}).json()["token"]
    assert new != old
    assert client.get(ROOMS_URL, HTTP_AUTHORIZATION=f"Token {new}").status_code == 200


def test_a_session_deletes_its_users_token_with_its_csrf_token(alice):
    from django.test import Client

    Token.objects.create(user=alice)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.delete(TOKEN_URL).status_code == 403  # no CSRF token
    assert Token.objects.filter(user=alice).exists()
    browser.get("/")  # the page sets the CSRF cookie
    response = browser.delete(TOKEN_URL, HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value)
    assert response.status_code == 204
    assert not Token.objects.exists()


def test_deleting_needs_a_user_and_touches_no_other_token(client, alice, make_user):
    bob = make_user("bob")
    assert client.delete(TOKEN_URL).status_code == 401
    client.force_login(alice)
    assert client.delete(TOKEN_URL).status_code == 204  # no token yet: nothing to delete, still done
    assert Token.objects.filter(user=bob).exists()


def test_there_is_no_endpoint_that_gives_a_session_its_permanent_token(client, alice):
    client.force_login(alice)
    assert client.get("/api/auth/session-token/").status_code == 404


def ticket_of(response) -> str:
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"ticket", "expires_in"}
    return body["ticket"]


def test_a_logged_in_session_gets_a_short_lived_ticket_not_its_token(client, alice, settings):
    settings.CHAT = {**settings.CHAT, "TICKET_MAX_AGE": 45}
    token = Token.objects.create(user=alice).key
    client.force_login(alice)
    response = client.post(TICKET_URL)
    ticket = ticket_of(response)
    assert response.json()["expires_in"] == 45
    assert token not in response.content.decode()
    assert tickets.users_for_tickets([ticket]) == [alice]
    # A credential: never kept by a browser's or a proxy's cache.
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]


def test_a_ticket_needs_a_session_and_its_csrf_token(client, alice):
    token = Token.objects.create(user=alice).key
    assert client.post(TICKET_URL).status_code in (401, 403)
    # Not for a token: an API client authenticates its WebSocket with the token itself.
    assert client.post(TICKET_URL, HTTP_AUTHORIZATION=f"Token {token}").status_code in (401, 403)
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.post(TICKET_URL).status_code == 403
    browser.get("/")
    ticket_of(browser.post(TICKET_URL, HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value))


def test_a_ticket_of_a_session_that_logged_out_is_refused(client, alice):
    client.force_login(alice)
    ticket = ticket_of(client.post(TICKET_URL))
    client.post("/logout/")
    assert isinstance(tickets.users_for_tickets([ticket])[0], errors.InvalidToken)
    assert client.post(TICKET_URL).status_code in (401, 403)


@pytest.fixture
def rates(monkeypatch):
    """Set the throttles' rates for one test (REST framework reads them once, at import)."""

    def set_rates(**scopes: str) -> None:
        monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {**SimpleRateThrottle.THROTTLE_RATES, **scopes})

    return set_rates


def assert_throttled(response) -> None:
    assert response.status_code == 429, response.content
    assert 1 <= int(response["Retry-After"]) <= 60


def test_password_logins_are_throttled_per_address_at_the_token_endpoint(client, alice, rates):
    rates(login="3/min")
    for password in ("wrong", "wrong", PASSWORD):
        assert client.post(TOKEN_URL, {"username": "alice", "password": password},
                           REMOTE_ADDR="192.0.2.1").status_code in (200, 400)
    # The right password too: the fourth attempt is not even checked.
    assert_throttled(client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="192.0.2.1"))
    # A session buys no more guesses; a spoofed X-Forwarded-For neither (NUM_PROXIES is 0).
    client.force_login(alice)
    assert_throttled(client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="192.0.2.1",
                                 HTTP_X_FORWARDED_FOR="198.51.100.7"))
    # Another address has its own count.
    assert client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD},
                       REMOTE_ADDR="192.0.2.2").status_code == 200


def test_login_page_attempts_are_throttled_per_address(client, alice, rates):
    rates(login="2/min")
    for _ in range(2):
        assert client.post("/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert_throttled(response)
    assert "Too many attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert client.get("/login/").status_code == 200  # showing the form is no attempt


def test_writes_are_throttled_per_user_reads_are_not(client, alice, make_user, rates):
    rates(write="3/min")
    token = Token.objects.create(user=alice).key
    as_alice = {"HTTP_AUTHORIZATION": f"Token {token}", "content_type": "application/json"}
    for n in range(3):
        assert client.post(ROOMS_URL, {"name": f"room {n}"}, **as_alice).status_code == 201
    assert_throttled(client.post(ROOMS_URL, {"name": "one too many"}, **as_alice))
    # The same user through a session: the same count.
    client.force_login(alice)
    assert_throttled(client.post(ROOMS_URL, {"name": "by session"}, content_type="application/json"))
    assert client.get(ROOMS_URL, HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    # Another user, from the same address: a count of its own.
    client.force_login(make_user("bob"))
    assert client.post(ROOMS_URL, {"name": "bob's"}, content_type="application/json").status_code == 201


def test_the_default_rates_writes_at_the_websockets_rate():
    # The gateway's RATE_LIMIT default is 30 frames a second; a login is 10 a minute per address.
    assert (throttles.WriteRateThrottle().num_requests, throttles.WriteRateThrottle().duration) == (30, 1)
    assert (throttles.LoginRateThrottle().num_requests, throttles.LoginRateThrottle().duration) == (10, 60)
