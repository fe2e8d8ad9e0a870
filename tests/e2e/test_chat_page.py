"""The chat page in real headless Chromium (Playwright driving the system Chromium) against the
real stack (gunicorn gateway, workers, Redis, the web server): two people chat both ways, unread
badges, typing, slash commands, rooms, history, a narrow screen; user text stays text."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from playwright.async_api import async_playwright, expect
from rest_framework.authtoken.models import Token

from chat.models import ChatMessage, ChatRoom
from tests.e2e.conftest import CHROMIUM_FLAGS, ChatPage, open_chat_page

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-test-password"
XSS = "<img src=x onerror=alert(1)>"
# A bound on each wait for what the page shows: the machine may be busy, a hang still fails.
WAIT_MS = 30_000
# How many messages select_room shows at first.
LATEST = 20


@pytest.fixture(autouse=True)
def patient_expect():
    expect.set_options(timeout=WAIT_MS)


@pytest.fixture
def people() -> dict[str, Any]:
    """page_alice, page_bob and page_carol; "Page room" and "Side room" of alice and bob."""
    User = get_user_model()
    users = {name: User.objects.create_user(f"page_{name}", password=PASSWORD) for name in ("alice", "bob", "carol")}
    main = ChatRoom.objects.create(name="Page room")
    main.users.set([users["alice"], users["bob"]])
    side = ChatRoom.objects.create(name="Side room")
    side.users.set([users["alice"], users["bob"]])
    tokens = {name: Token.objects.get_or_create(user=user)[0].key for name, user in users.items()}
    return {"users": users, "tokens": tokens, "main": main.pk.hex, "side": side.pk.hex}


async def in_thread(work: Callable[[], Any]) -> Any:
    """ORM work from inside the browser scenario (an event loop runs there): in a thread of its own."""

    def run() -> Any:
        try:
            return work()
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


def run_in_browser(executable: str, scenario: Callable[[Any, Any], Awaitable[None]]) -> None:
    """Run `scenario(playwright, browser)` in a headless Chromium that is closed after it."""

    async def run() -> None:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
            try:
                await scenario(playwright, browser)
            finally:
                await browser.close()

    asyncio.run(run())


async def log_in(browser, web: str, name: str, **options: Any) -> ChatPage:
    return await open_chat_page(browser, web, f"page_{name}", PASSWORD, **options)


def room_button(chat: ChatPage, name: str):
    return chat.page.locator("#room-list button.room", has=chat.page.locator(".room-name", has_text=name))


async def open_room(chat: ChatPage, name: str) -> None:
    await room_button(chat, name).click()
    await expect(chat.page.locator("#room-title")).to_have_text(name)
    await expect(chat.page.locator("#composer-text")).to_be_enabled()
    await expect(chat.page.locator("#messages")).not_to_have_attribute("aria-busy", "true")


def message(chat: ChatPage, text: str):
    """The stored (not pending) message whose text is exactly `text`."""
    return chat.page.locator("#messages li.message[data-id]", has=chat.page.locator(
        "p.text", has_text=re.compile(rf"^{re.escape(text)}$")))


async def send(chat: ChatPage, text: str) -> None:
    await chat.page.fill("#composer-text", text)
    await chat.page.press("#composer-text", "Enter")


async def post_over_rest(playwright, web: str, token: str, room: str, text: str) -> dict[str, Any]:
    api = await playwright.request.new_context(base_url=web, extra_http_headers={"Authorization": f"Token {token}"})
    try:
        response = await api.post(f"/api/rooms/{room}/messages/", data={"text": text})
        assert response.status == 201, (response.status, await response.text())
        return await response.json()
    finally:
        await api.dispose()


def assert_clean(*chats: ChatPage) -> None:
    for chat in chats:
        assert chat.errors == [], chat.errors
        assert chat.console_errors == [], chat.console_errors
        assert chat.dialogs == [], chat.dialogs


def test_two_people_chat_both_ways_and_text_stays_text(chromium_executable, e2e, web, people, screenshot):
    async def scenario(playwright, browser):
        # Alice reads in New Zealand time, with 24-hour clocks.
        alice = await log_in(browser, web, "alice", locale="en-GB", timezone_id="Pacific/Auckland")
        bob = await log_in(browser, web, "bob")
        requests: list[str] = []
        sockets: list[str] = []
        alice.page.on("request", lambda request: requests.append(request.url))
        alice.page.on("websocket", lambda socket: sockets.append(socket.url))
        await alice.page.reload()
        await expect(alice.page.locator("#connection")).to_have_attribute("data-state", "connected")
        await open_room(alice, "Page room")
        await open_room(bob, "Page room")

        await send(alice, "hello bob")
        await expect(message(bob, "hello bob").locator(".author")).to_have_text("page_alice")
        await expect(message(alice, "hello bob")).to_have_class(re.compile(r"\bown\b"))
        await expect(message(bob, "hello bob")).not_to_have_class(re.compile(r"\bown\b"))
        await expect(alice.page.locator("#composer-text")).to_have_value("")

        # Shift+Enter breaks the line; Enter sends the two lines as one message.
        await bob.page.fill("#composer-text", "line one")
        await bob.page.press("#composer-text", "Shift+Enter")
        await bob.page.keyboard.type("line two")
        await bob.page.press("#composer-text", "Enter")
        await expect(message(alice, "line one\nline two")).to_have_count(1)
        await expect(message(bob, "line one\nline two")).to_have_class(re.compile(r"\bown\b"))

        # HTML in a message is shown as text: no element made from it, nothing ran.
        await bob.page.fill("#composer-text", XSS)
        await bob.page.click("#composer button[type=submit]")
        await expect(message(alice, XSS)).to_have_count(1)
        await expect(message(bob, XSS)).to_have_count(1)
        for chat, author in ((alice, "page_bob"), (bob, "You")):
            assert await chat.page.locator("img").count() == 0
            await expect(room_button(chat, "Page room").locator(".preview")).to_have_text(f"{author}: {XSS}")

        # Times in the viewer's time zone: the stored timestamp, as Auckland reads it.
        stored = await in_thread(lambda: ChatMessage.objects.get(text="hello bob").date_created)
        local = stored.astimezone(ZoneInfo("Pacific/Auckland"))
        shown = message(alice, "hello bob").locator("time")
        await expect(shown).to_have_text(re.compile(rf"(^| ){local:%H:%M}$"))
        machine_time = datetime.fromisoformat(await shown.get_attribute("datetime"))
        assert abs((machine_time - stored).total_seconds()) < 0.002, (machine_time, stored)

        texts = await alice.page.locator("#messages li.message p.text").all_inner_texts()
        assert texts == ["hello bob", "line one\nline two", XSS]

        # The README's picture: a badge on the other room, and bob typing.
        await post_over_rest(playwright, web, people["tokens"]["bob"], people["side"], "lunch at noon?")
        await expect(room_button(alice, "Side room").locator(".badge")).to_have_text("1 unread")
        await bob.page.locator("#composer-text").press_sequentially("see you")
        await expect(alice.page.locator("#typing")).to_have_text("page_bob is typing…")
        await screenshot(alice.page, "chat-page")
        await screenshot(bob.page, "chat-page-bob")

        # Nothing came from another host: the page's own origin and its gateway only.
        hosts = {urlsplit(url).netloc for url in requests if not url.startswith("data:")}
        assert hosts == {urlsplit(web).netloc}, hosts
        assert sockets == [e2e.gateway_a.replace("http://", "ws://")], sockets
        assert_clean(alice, bob)

    run_in_browser(chromium_executable, scenario)


def test_the_policy_blocks_inline_script_and_html_strings_in_the_browser(chromium_executable, web, people):
    async def scenario(playwright, browser):
        alice = await log_in(browser, web, "alice")
        outcome = await alice.page.evaluate("""() => {
            const tried = {};
            try { document.body.insertAdjacentHTML("beforeend", "<b id=injected>x</b>"); tried.html = "ran"; }
            catch (error) { tried.html = error.name; }
            const script = document.createElement("script");
            try { script.textContent = "window.injected = 1"; document.body.append(script); tried.script = "appended"; }
            catch (error) { tried.script = error.name; }
            return tried;
        }""")
        # Trusted Types without a policy: an HTML string or a script text is refused outright.
        assert outcome == {"html": "TypeError", "script": "TypeError"}
        assert await alice.page.locator("#injected").count() == 0
        assert await alice.page.evaluate("() => window.injected") is None

    run_in_browser(chromium_executable, scenario)


def test_unread_badge_for_a_room_not_open_then_read_when_seen(chromium_executable, web, people, screenshot):
    async def scenario(playwright, browser):
        alice = await log_in(browser, web, "alice")
        # Alice's second tab, with no room open.
        other_tab = await log_in(browser, web, "alice")
        await open_room(alice, "Page room")
        badge = room_button(alice, "Side room").locator(".badge")
        await expect(badge).to_have_count(0)

        await post_over_rest(playwright, web, people["tokens"]["bob"], people["side"], "psst, over here")
        await expect(badge).to_have_text("1 unread")
        await expect(room_button(alice, "Side room").locator(".preview")).to_have_text("page_bob: psst, over here")
        # Newest activity first.
        await expect(alice.page.locator("#room-list .room-name").first).to_have_text("Side room")
        await post_over_rest(playwright, web, people["tokens"]["bob"], people["side"], "still here")
        await expect(badge).to_have_text("2 unread")
        # A message in the open room makes no badge there (the other tab counts it).
        await post_over_rest(playwright, web, people["tokens"]["bob"], people["main"], "in the open room")
        await expect(message(alice, "in the open room")).to_have_count(1)
        await expect(room_button(alice, "Page room").locator(".badge")).to_have_count(0)
        await expect(alice.page.locator("#room-list .room-name").first).to_have_text("Page room")
        await expect(room_button(other_tab, "Side room").locator(".badge")).to_have_text("2 unread")
        await screenshot(alice.page, "chat-page-unread")

        # Opening the room shows its messages and marks them read: the other tab's badge goes
        # too (mark_read reaches every connection of the user), and stays gone after a reload.
        await open_room(alice, "Side room")
        await expect(message(alice, "still here")).to_have_count(1)
        await expect(badge).to_have_count(0)
        await expect(room_button(other_tab, "Side room").locator(".badge")).to_have_count(0)
        await other_tab.page.reload()
        await expect(other_tab.page.locator("#connection")).to_have_attribute("data-state", "connected")
        await expect(room_button(other_tab, "Side room").locator(".preview")).to_have_text("page_bob: still here")
        await expect(room_button(other_tab, "Side room").locator(".badge")).to_have_count(0)
        assert_clean(alice, other_tab)

    run_in_browser(chromium_executable, scenario)


def test_typing_indicator_shows_and_clears(chromium_executable, web, people):
    async def scenario(playwright, browser):
        alice = await log_in(browser, web, "alice")
        bob = await log_in(browser, web, "bob")
        await open_room(alice, "Page room")
        await open_room(bob, "Page room")
        typing = alice.page.locator("#typing")
        await expect(typing).to_be_hidden()

        # Shown while bob types, and gone when his message comes.
        await bob.page.locator("#composer-text").press_sequentially("I am typi")
        await expect(typing).to_have_text("page_bob is typing…")
        await expect(typing).to_be_visible()
        await expect(bob.page.locator("#typing")).to_be_hidden()  # never one's own
        await bob.page.locator("#composer-text").press_sequentially("ng this")
        await bob.page.press("#composer-text", "Enter")
        await expect(message(alice, "I am typing this")).to_have_count(1)
        await expect(typing).to_be_hidden()

        # And gone some seconds after bob stops typing without sending.
        await bob.page.locator("#composer-text").press_sequentially("never mind")
        await expect(typing).to_be_visible()
        await bob.page.fill("#composer-text", "")
        await expect(typing).to_be_hidden()
        assert_clean(alice, bob)

    run_in_browser(chromium_executable, scenario)


def test_slash_commands(chromium_executable, web, people):
    async def scenario(playwright, browser):
        alice = await log_in(browser, web, "alice")
        bob = await log_in(browser, web, "bob")
        await open_room(alice, "Page room")
        notices = alice.page.locator("#messages li.notice")

        await send(alice, "/help")
        await expect(notices.last).to_contain_text("/msg USER TEXT")
        await expect(notices.last).to_contain_text("/who")

        await send(alice, "/who")
        await expect(notices.last).to_have_text("Online here: page_alice, page_bob")

        await send(alice, "/time")
        await expect(notices.last).to_contain_text("Server time:")
        await expect(notices.last).to_contain_text(re.compile(r"\d+ connections? on this gateway"))

        # An unknown command says so, sends nothing, and leaves the text to be corrected.
        before = await in_thread(lambda: ChatMessage.objects.count())
        await send(alice, "/frobnicate now")
        await expect(notices.last).to_contain_text("Unknown command: /frobnicate")
        await expect(alice.page.locator("#composer-text")).to_have_value("/frobnicate now")
        await alice.page.fill("#composer-text", "")

        # //text sends "/text"; /msg sends a direct message that bob sees under alice's name.
        await send(alice, "//slash is text")
        await expect(message(alice, "/slash is text")).to_have_count(1)
        await send(alice, "/msg page_bob a word in private")
        await expect(notices.last).to_have_text("Direct message sent to page_bob.")
        direct = room_button(bob, "page_alice")
        await expect(direct.locator(".badge")).to_have_text("1 unread")
        await expect(direct.locator(".preview")).to_have_text("page_alice: a word in private")
        await send(alice, "/msg page_nobody hello")
        await expect(notices.last).to_contain_text("/msg:")

        texts = await in_thread(lambda: list(ChatMessage.objects.order_by("id").values_list("text", flat=True)))
        assert len(texts) == before + 2 and texts[-2:] == ["/slash is text", "a word in private"], texts
        await open_room(bob, "page_alice")
        await expect(message(bob, "a word in private")).to_have_count(1)
        assert_clean(alice, bob)

    run_in_browser(chromium_executable, scenario)


def test_create_a_room_add_members_direct_message_and_leave(chromium_executable, web, people, screenshot):
    name = "<b>Plans</b>"

    async def scenario(playwright, browser):
        alice = await log_in(browser, web, "alice")
        bob = await log_in(browser, web, "bob")

        # A room with a member, named with HTML: both see the name as text.
        await alice.page.click("summary:text('New room')")
        await alice.page.fill("#new-room-name", name)
        await alice.page.fill("#new-room-members", "page_bob")
        await alice.page.click("#new-room-form button[type=submit]")
        await expect(alice.page.locator("#room-title")).to_have_text(name)
        await expect(alice.page.locator("#room-members")).to_have_text("Members: page_alice, page_bob")
        await expect(room_button(bob, name)).to_have_count(1)
        assert await bob.page.locator("#room-list b").count() == 0

        # Add carol.
        await alice.page.click("summary:text('Room settings')")
        await alice.page.fill("#add-members", "page_carol")
        await alice.page.click("#add-members-form button[type=submit]")
        await expect(alice.page.locator("#room-members")).to_have_text(
            "Members: page_alice, page_bob, page_carol")

        # Bob leaves: alice sees him go, bob's list drops the room.
        await open_room(bob, name)
        await bob.page.click("summary:text('Room settings')")
        await bob.page.click("#leave-form button[type=submit]")
        await expect(room_button(bob, name)).to_have_count(0)
        await expect(bob.page.locator("#room-title")).to_have_text("Pick a room")
        await expect(alice.page.locator("#room-members")).to_have_text("Members: page_alice, page_carol")

        # A direct message to carol, who has no direct room with alice yet.
        await alice.page.click("summary:text('Direct message')")
        await alice.page.fill("#direct-username", "page_carol")
        await alice.page.click("#direct-form button[type=submit]")
        await expect(alice.page.locator("#room-title")).to_have_text("page_carol")
        await send(alice, "hi carol")
        await expect(alice.page.locator("#room-members")).to_have_text("Direct message: page_alice, page_carol")
        await expect(message(alice, "hi carol")).to_have_count(1)
        await expect(room_button(alice, "page_carol")).to_have_attribute("aria-current", "true")
        await screenshot(alice.page, "chat-page-rooms")

        def state():
            room = ChatRoom.objects.get(name=name)
            direct = ChatRoom.objects.get(is_direct=True)
            return (sorted(room.users.values_list("username", flat=True)),
                    sorted(direct.users.values_list("username", flat=True)),
                    list(direct.messages.values_list("text", flat=True)))

        assert await in_thread(state) == (["page_alice", "page_carol"], ["page_alice", "page_carol"],
                                          ["hi carol"])
        assert_clean(alice, bob)

    run_in_browser(chromium_executable, scenario)


def test_scrolling_up_loads_older_messages(chromium_executable, web, people):
    total = 75
    users = people["users"]
    ChatMessage.objects.bulk_create([
        ChatMessage(user=users["bob"] if n % 2 else users["alice"], room_id=people["main"], text=f"history {n}")
        for n in range(1, total + 1)])

    async def scenario(playwright, browser):
        alice = await log_in(browser, web, "alice")
        await open_room(alice, "Page room")
        shown = alice.page.locator("#messages li.message p.text")
        await expect(shown).to_have_count(LATEST)
        await expect(shown.first).to_have_text(f"history {total - LATEST + 1}")
        await expect(shown.last).to_have_text(f"history {total}")

        # Scrolling to the top loads the page before, and keeps the place.
        await alice.page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
        await expect(shown).to_have_count(LATEST + 50)
        assert await alice.page.locator("#messages").evaluate("list => list.scrollTop") > 0
        await alice.page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
        await expect(shown).to_have_count(total)
        await expect(shown.first).to_have_text("history 1")
        await expect(alice.page.locator("#load-older")).to_be_hidden()
        texts = await shown.all_inner_texts()
        assert texts == [f"history {n}" for n in range(1, total + 1)]
        assert_clean(alice)

    run_in_browser(chromium_executable, scenario)


def test_small_screen_and_keyboard(chromium_executable, web, people, screenshot):
    async def scenario(playwright, browser):
        alice = await log_in(browser, web, "alice", viewport={"width": 360, "height": 640})
        page = alice.page
        # One pane at a time: the rooms first.
        await expect(page.locator("#room-list")).to_be_visible()
        await expect(page.locator("#composer-text")).to_be_hidden()
        assert await page.evaluate("() => document.documentElement.scrollWidth") <= 360

        # The keyboard alone: a room's button, Enter, and the composer has the focus.
        await room_button(alice, "Page room").focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("#composer-text")).to_be_focused()
        await expect(page.locator("#room-list")).to_be_hidden()
        await page.keyboard.type("from a small screen")
        await page.keyboard.press("Enter")
        await expect(message(alice, "from a small screen")).to_have_count(1)
        await expect(page.locator("#composer button[type=submit]")).to_be_in_viewport()
        assert await page.evaluate("() => document.documentElement.scrollWidth") <= 360
        await screenshot(page, "chat-page-360")

        # Every form field has a label.
        unlabelled = await page.evaluate("""() => [...document.querySelectorAll("input:not([type=hidden]), textarea")]
            .filter((field) => field.labels.length === 0).map((field) => field.id)""")
        assert unlabelled == []

        await page.click("#back")
        await expect(page.locator("#room-list")).to_be_visible()
        assert_clean(alice)

    run_in_browser(chromium_executable, scenario)
