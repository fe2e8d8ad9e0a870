"""`chat.tickets`: the short-lived, signed WebSocket tickets of the chat page, bound to the user, the
login session and the password; refused once expired, tampered with, or of a session that logged out."""

from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core import signing
from django.utils import timezone

from chat import errors, services, tickets
from chat.models import EndedSession

pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

START = 1_800_000_000.0


@pytest.fixture
def clock(monkeypatch) -> SimpleNamespace:
    """signing's clock, frozen at START and moved by hand (`clock.now = …`)."""
    frozen = SimpleNamespace(now=START)
    monkeypatch.setattr(signing, "time", SimpleNamespace(time=lambda: frozen.now))
    return frozen


def one(ticket):
    [outcome] = tickets.users_for_tickets([ticket])
    return outcome


def logged_in_session(client, user) -> str:
    client.force_login(user)
    return client.session.session_key


def test_a_ticket_names_its_user(client, alice, bob):
    ticket = tickets.issue(alice, logged_in_session(client, alice))
    assert one(ticket) == alice
    # It is not the permanent token, and does not carry the session key (an HttpOnly cookie's).
    assert client.session.session_key not in ticket
    assert client.session.session_key not in json.dumps(signing.loads(ticket, salt=tickets.TICKET_SALT))


def test_a_ticket_may_be_used_again_within_its_lifetime(client, alice):
    ticket = tickets.issue(alice, logged_in_session(client, alice))
    assert tickets.users_for_tickets([ticket, ticket]) == [alice, alice]


def test_a_ticket_expires_after_ticket_max_age(client, alice, clock, settings):
    settings.CHAT = {**settings.CHAT, "TICKET_MAX_AGE": 60}
    ticket = tickets.issue(alice, logged_in_session(client, alice))
    clock.now = START + 60
    assert one(ticket) == alice
    clock.now = START + 62
    assert isinstance(one(ticket), errors.InvalidToken)
    settings.CHAT = {**settings.CHAT, "TICKET_MAX_AGE": 120}
    assert one(ticket) == alice


@pytest.mark.parametrize("tamper", [
    lambda ticket: ticket[:-1] + ("A" if ticket[-1] != "A" else "B"),  # the signature
    lambda ticket: ("e" if ticket[0] != "e" else "f") + ticket[1:],  # the payload
    lambda ticket: ticket + "x",
    lambda ticket: ticket.split(":")[0],
    lambda ticket: "",
])
def test_a_tampered_ticket_is_refused(client, alice, tamper):
    ticket = tickets.issue(alice, logged_in_session(client, alice))
    assert isinstance(one(tamper(ticket)), errors.InvalidToken)


def test_a_ticket_naming_another_user_needs_this_sites_key(client, alice, bob, settings):
    claims = signing.loads(tickets.issue(alice, logged_in_session(client, alice)), salt=tickets.TICKET_SALT)
    forged = {**claims, "u": bob.pk}
    assert isinstance(one(signing.dumps(forged, salt=tickets.TICKET_SALT, key="another site's key")),
                      errors.InvalidToken)
    # Signed for another purpose (salt) by this site: no ticket either.
    assert isinstance(one(signing.dumps(forged)), errors.InvalidToken)
    # Bob's claims with alice's password state: refused, whoever signed them.
    assert isinstance(one(signing.dumps(forged, salt=tickets.TICKET_SALT)), errors.InvalidToken)


@pytest.mark.parametrize("payload", [[1, 2], {"u": "1", "s": "x", "p": "y"}, {"u": True, "s": "x", "p": "y"},
                                     {"u": 1, "s": None, "p": "y"}, {"u": 1}, "alice"])
def test_a_signed_ticket_of_the_wrong_shape_is_refused(alice, payload):
    assert isinstance(one(signing.dumps(payload, salt=tickets.TICKET_SALT)), errors.InvalidToken)


@pytest.mark.parametrize("ticket", [None, 42, ["x"], {"u": 1}, "x" * (tickets.MAX_TICKET_LENGTH + 1)])
def test_what_is_no_ticket_is_refused(db, ticket):
    assert isinstance(one(ticket), errors.InvalidToken)


def test_a_logged_out_sessions_ticket_is_refused_and_the_users_other_sessions_are_not(client, alice):
    from django.test import Client

    ticket = tickets.issue(alice, logged_in_session(client, alice))
    other = Client()
    other_ticket = tickets.issue(alice, logged_in_session(other, alice))
    assert client.post("/logout/").status_code == 302
    assert isinstance(one(ticket), errors.InvalidToken)
    assert one(other_ticket) == alice


def test_a_ticket_from_before_a_password_change_is_refused(client, alice):
    ticket = tickets.issue(alice, logged_in_session(client, alice))
    alice.set_password("a-new-long-password")
    alice.save()
    assert isinstance(one(ticket), errors.InvalidToken)


def test_an_inactive_users_ticket_is_refused(client, alice):
    ticket = tickets.issue(alice, logged_in_session(client, alice))
    alice.is_active = False
    alice.save()
    assert isinstance(one(ticket), errors.InvalidToken)


def test_two_queries_for_any_number_of_tickets_none_for_no_good_one(client, alice, bob,
                                                                     django_assert_num_queries):
    from django.test import Client

    alices = tickets.issue(alice, logged_in_session(client, alice))
    bobs = tickets.issue(bob, logged_in_session(Client(), bob))
    with django_assert_num_queries(2):
        users = tickets.users_for_tickets([bobs, "bad", alices, None, bobs])
    assert [getattr(user, "username", type(user).__name__) for user in users] == [
        "bob", "InvalidToken", "alice", "InvalidToken", "bob"]
    with django_assert_num_queries(0):
        assert isinstance(one("bad"), errors.InvalidToken)


def test_a_frame_with_a_ticket_is_authenticated_by_it_one_with_a_token_by_that(client, alice, bob):
    from rest_framework.authtoken.models import Token

    ticket = tickets.issue(alice, logged_in_session(client, alice))
    bobs_token = Token.objects.get(user=bob).key
    users = services.users_for_credentials([{"ticket": ticket}, {"token": bobs_token}, {"ticket": "bad"},
                                            {"ticket": ticket, "token": bobs_token}, {}, {"token": ticket}])
    assert [getattr(user, "username", type(user).__name__) for user in users] == [
        "alice", "bob", "InvalidToken", "alice", "InvalidToken", "InvalidToken"]


def test_a_logout_is_remembered_only_as_long_as_its_tickets_could_live(db, settings):
    settings.CHAT = {**settings.CHAT, "TICKET_MAX_AGE": 60}
    long_ago = timezone.now() - timedelta(seconds=60) - tickets.CLOCK_SKEW - timedelta(seconds=1)
    EndedSession.objects.create(session_hash="old", ended_at=long_ago)
    EndedSession.objects.create(session_hash="recent", ended_at=timezone.now() - timedelta(seconds=30))
    tickets.session_ended("a-session-key")
    assert set(EndedSession.objects.values_list("session_hash", flat=True)) == {
        "recent", tickets.session_hash("a-session-key")}
    tickets.session_ended("a-session-key")  # twice: still one row
    tickets.session_ended(None)  # no session: nothing to remember
    assert EndedSession.objects.count() == 2
