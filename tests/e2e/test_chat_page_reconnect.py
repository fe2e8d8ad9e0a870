"""The chat page heals itself: its gateway process restarts, the page reconnects, authenticates
again, `sync`s, and shows what was posted meanwhile (through the REST API); a message typed while
the connection was down is sent when it is back, and stored once."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from chat.models import ChatMessage
from tests.e2e.conftest import open_chat_page
from tests.e2e.test_chat_page import (
    PASSWORD,
    in_thread,
    message,
    open_room,
    patient_expect,
    people,
    post_over_rest,
    room_button,
    run_in_browser,
    send,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

__all__ = ["patient_expect", "people"]  # the fixtures, shared with test_chat_page

# The gateway's restart: a new gunicorn process on a busy machine, and the page's backoff (at most
# 10 s between attempts), well inside this.
RECONNECT_MS = 90_000


def test_after_the_gateway_restarts_the_page_reconnects_and_shows_what_it_missed(
        chromium_executable, page_stack, people, screenshot):
    web = page_stack.web
    bob_token = people["tokens"]["bob"]

    async def scenario(playwright, browser):
        alice = await open_chat_page(browser, web, "page_alice", PASSWORD)
        page = alice.page
        status = page.locator("#connection")
        await open_room(alice, "Page room")
        await post_over_rest(playwright, web, bob_token, people["main"], "before the restart")
        await expect(message(alice, "before the restart")).to_have_count(1)

        await asyncio.to_thread(page_stack.stop_gateway)
        await expect(status).to_have_attribute("data-state", "reconnecting")
        await expect(status).to_have_text("Reconnecting…")

        # Posted while the page is away, in the open room and in another.
        await post_over_rest(playwright, web, bob_token, people["main"], "while you were away 1")
        await post_over_rest(playwright, web, bob_token, people["main"], "while you were away 2")
        await post_over_rest(playwright, web, bob_token, people["side"], "over in the side room")
        # Typed while the connection is down: shown as being sent, sent once it is back.
        await send(alice, "typed while down")
        pending = page.locator("#messages li.message.pending", has_text="typed while down")
        await expect(pending.locator(".state")).to_have_text("sending…")
        await screenshot(page, "chat-page-reconnecting")

        await asyncio.to_thread(page_stack.start_gateway)
        await expect(status).to_have_attribute("data-state", "connected", timeout=RECONNECT_MS)
        for text in ("while you were away 1", "while you were away 2", "typed while down"):
            await expect(message(alice, text)).to_have_count(1)
        await expect(pending).to_have_count(0)
        await expect(room_button(alice, "Side room").locator(".badge")).to_have_text("1 unread")
        await expect(room_button(alice, "Side room").locator(".preview")).to_have_text(
            "page_bob: over in the side room")
        texts = await page.locator("#messages li.message p.text").all_inner_texts()
        assert texts == ["before the restart", "while you were away 1", "while you were away 2",
                         "typed while down"], texts
        await screenshot(page, "chat-page-reconnected")

        # The message typed while down was stored exactly once.
        stored = await in_thread(lambda: ChatMessage.objects.filter(text="typed while down").count())
        assert stored == 1
        # And the page chats on, both ways.
        await send(alice, "back again")
        await expect(message(alice, "back again")).to_have_class("message own")
        await post_over_rest(playwright, web, bob_token, people["main"], "welcome back")
        await expect(message(alice, "welcome back")).to_have_count(1)
        # Page errors none; the console does log the refused connection attempts.
        assert alice.errors == [] and alice.dialogs == []
        assert all("WebSocket" in line for line in alice.console_errors), alice.console_errors

    run_in_browser(chromium_executable, scenario)
