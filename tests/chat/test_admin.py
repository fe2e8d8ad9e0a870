"""The admin: rooms with their member counts and members inline, messages searchable by text and user."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat.models import ChatMessage, Membership

pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

ROOMS = "/admin/chat/chatroom/"
MESSAGES = "/admin/chat/chatmessage/"


@pytest.fixture
def staff(db, client) -> Client:
    client.force_login(get_user_model().objects.create_superuser("admin", "admin@example.com", None))
    return client


@pytest.fixture
def rooms(make_room, alice, bob, carol):
    general = make_room(alice, bob, carol, name="General")
    quiet = make_room(alice, name="Quiet corner")
    ChatMessage.objects.create(room=general, user=bob, text="lunch at noon?")
    ChatMessage.objects.create(room=general, user=carol, text="the build is green")
    return general, quiet


def listed(response) -> str:
    assert response.status_code == 200
    return response.content.decode()


def test_the_room_list_shows_member_counts(staff, rooms):
    response = staff.get(ROOMS)
    assert [(room.name, room.member_count) for room in response.context["cl"].result_list] == [
        ("Quiet corner", 1), ("General", 3)]


def test_rooms_are_searchable_by_name_and_member(staff, rooms):
    general, quiet = rooms
    assert list(staff.get(ROOMS, {"q": "quiet"}).context["cl"].result_list) == [quiet]
    found = staff.get(ROOMS, {"q": "carol"}).context["cl"].result_list
    # Still one row per room, with the count of all its members, not of those that matched.
    assert [(room, room.member_count) for room in found] == [(general, 3)]


def test_rooms_sort_by_member_count(staff, rooms):
    general, quiet = rooms
    column = 4  # list_display with the action checkbox first: name, id, is_direct, member_count
    assert list(staff.get(ROOMS, {"o": f"-{column}"}).context["cl"].result_list) == [general, quiet]


def test_the_room_page_shows_its_members_inline(staff, rooms, alice):
    general, _ = rooms
    response = staff.get(f"{ROOMS}{general.pk}/change/")
    page = listed(response)
    (inline,) = response.context["inline_admin_formsets"]
    assert inline.formset.model is Membership
    assert sorted(form.instance.user.username for form in inline.formset.initial_forms) == ["alice", "bob", "carol"]
    assert f'value="{alice.pk}"' in page


def test_messages_are_searchable_by_text_and_user(staff, rooms):
    assert [m.text for m in staff.get(MESSAGES, {"q": "lunch"}).context["cl"].result_list] == ["lunch at noon?"]
    assert [m.text for m in staff.get(MESSAGES, {"q": "carol"}).context["cl"].result_list] == ["the build is green"]
    assert listed(staff.get(MESSAGES, {"q": "nothing like this"})).count("lunch at noon?") == 0


def test_the_message_list_costs_the_same_for_few_and_many(staff, rooms, django_assert_max_num_queries, alice):
    general, _ = rooms
    with django_assert_max_num_queries(12) as captured:
        listed(staff.get(MESSAGES))
    few = len(captured)
    ChatMessage.objects.bulk_create([ChatMessage(room=general, user=alice, text=f"m{i}") for i in range(50)])
    with django_assert_max_num_queries(few):
        listed(staff.get(MESSAGES))


def test_the_admin_needs_staff(client, alice):
    client.force_login(alice)
    assert client.get(ROOMS).status_code == 302
