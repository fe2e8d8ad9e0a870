"""The message lifecycle on the chat page, in real headless Chromium against the real stack: editing
(the Edit control; Up in an empty composer, Enter saves, Escape cancels), deleting with an inline
confirmation, reactions (the picker, a typed emoji, one's own taken back), the edited mark and the
tombstone, others' changes arriving live, changes made while the page was away shown after its
reconnect (sync by cursor) without a reload, and user text kept as text throughout."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from chat.models import ChatMessage, ChatReaction
from tests.e2e.client import Client
from tests.e2e.conftest import ChatPage, open_chat_page
from tests.e2e.test_chat_page import (
    PASSWORD,
    assert_clean,
    in_thread,
    log_in,
    message,
    open_room,
    patient_expect,
    people,
    post_over_rest,
    room_button,
    run_in_browser,
    send,
)
from tests.e2e.test_chat_page_reconnect import RECONNECT_MS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

__all__ = ["patient_expect", "people"]  # the fixtures, shared with test_chat_page

# What the page calls a deleted message.
TOMBSTONE = "message deleted"


async def both_in_the_room(browser, web, **alices_context: Any) -> tuple[ChatPage, ChatPage]:
    """Alice's page (its browser context as given) and bob's, each logged in with "Page room" open."""
    alice = await log_in(browser, web, "alice", **alices_context)
    bob = await log_in(browser, web, "bob")
    await open_room(alice, "Page room")
    await open_room(bob, "Page room")
    return alice, bob


def by_id(chat: ChatPage, message_id: int | str):
    """The message element `message_id`, whatever it shows now."""
    return chat.page.locator(f'#messages li.message[data-id="{message_id}"]')


async def shown_id(chat: ChatPage, text: str) -> int:
    """The id of the stored message whose text is `text`, once the page shows it."""
    item = message(chat, text)
    await expect(item).to_have_count(1)
    return int(await item.get_attribute("data-id"))


async def sent_to_both(alice: ChatPage, bob: ChatPage, text: str) -> int:
    """Alice sends `text`: its id, once both pages show it."""
    await send(alice, text)
    message_id = await shown_id(alice, text)
    await expect(by_id(bob, message_id)).to_have_count(1)
    return message_id


def composer(chat: ChatPage):
    return chat.page.locator("#composer-text")


def chips(chat: ChatPage, message_id: int):
    return by_id(chat, message_id).locator(".reactions button.reaction")


def chip(chat: ChatPage, message_id: int, emoji: str):
    return by_id(chat, message_id).locator(f'.reactions button.reaction[data-emoji="{emoji}"]')


async def pick(chat: ChatPage, message_id: int, emoji: str) -> None:
    """React with one of the picker's common emoji."""
    item = by_id(chat, message_id)
    await item.locator("button.react-open").click()
    await expect(item.locator(".picker")).to_be_visible()
    await item.locator(f'.picker button.pick[data-emoji="{emoji}"]').click()
    await expect(item.locator(".picker")).to_be_hidden()


async def type_emoji(chat: ChatPage, message_id: int, emoji: str) -> None:
    """React with an emoji typed into the picker's field."""
    item = by_id(chat, message_id)
    await item.locator("button.react-open").click()
    await item.locator(".picker input[name=emoji]").fill(emoji)
    await item.locator(".picker button.add-emoji").click()


def stored(message_id: int) -> dict[str, Any]:
    """The message as the database has it, with its reactions in order."""
    row = ChatMessage.objects.get(pk=message_id)
    reactions: dict[str, list[str]] = {}
    for reaction in ChatReaction.objects.filter(message_id=message_id).select_related("user").order_by("id"):
        reactions.setdefault(reaction.emoji, []).append(reaction.user.username)
    return {"text": row.text, "edited_at": row.edited_at, "deleted": row.deleted, "reactions": reactions}


def test_edit_with_the_edit_control_shows_the_edited_mark_with_its_time_on_hover(chromium_executable, web, people,
                                                                                  screenshot):
    async def scenario(playwright, browser):
        alice, bob = await both_in_the_room(browser, web, locale="en-GB", timezone_id="Pacific/Auckland")
        message_id = await sent_to_both(alice, bob, "frist try")
        # Edit and Delete on one's own messages only; React on every one.
        await expect(by_id(bob, message_id).locator("button.edit, button.delete")).to_have_count(0)
        await expect(by_id(bob, message_id).locator("button.react-open")).to_have_count(1)
        await expect(by_id(alice, message_id).locator(".edited")).to_have_count(0)

        await by_id(alice, message_id).locator("button.edit").click()
        await expect(composer(alice)).to_have_value("frist try")
        await expect(composer(alice)).to_be_focused()
        await expect(alice.page.locator("#editing")).to_be_visible()
        await expect(by_id(alice, message_id)).to_have_class(re.compile(r"\bediting\b"))
        await composer(alice).fill("first try")
        await composer(alice).press("Enter")
        await expect(composer(alice)).to_have_value("")
        await expect(alice.page.locator("#editing")).to_be_hidden()

        # Both see the new text in place, marked edited; the mark's title holds the edit's time,
        # in the viewer's time zone and locale.
        for chat in (alice, bob):
            await expect(by_id(chat, message_id).locator("p.text")).to_have_text("first try")
            await expect(by_id(chat, message_id).locator(".edited")).to_have_text("edited")
        row = await in_thread(lambda: stored(message_id))
        assert row["text"] == "first try" and row["edited_at"] is not None and not row["deleted"]
        mark = by_id(alice, message_id).locator(".edited")
        await mark.hover()
        expected = await alice.page.evaluate(
            "t => `Edited ${new Date(t * 1000).toLocaleString([], { dateStyle: 'medium', timeStyle: 'medium' })}`",
            row["edited_at"].timestamp())
        await expect(mark).to_have_attribute("title", expected)
        assert "2" in expected  # a date, not an empty title
        await expect(room_button(bob, "Page room").locator(".preview")).to_have_text("page_alice: first try")
        await screenshot(alice.page, "chat-page-edited")
        assert_clean(alice, bob)

    run_in_browser(chromium_executable, scenario)


def test_up_in_an_empty_composer_edits_the_last_own_message_enter_saves_escape_cancels(chromium_executable, web,
                                                                                       people):
    async def scenario(playwright, browser):
        alice, bob = await both_in_the_room(browser, web)
        await send(alice, "one")
        await send(alice, "two")
        two = await shown_id(alice, "two")
        await send(bob, "from bob, the newest")
        await expect(message(alice, "from bob, the newest")).to_have_count(1)
        one = await shown_id(alice, "one")
        banner = alice.page.locator("#editing")

        # Up in an empty box: the user's own last message (not bob's, newer).
        await composer(alice).press("ArrowUp")
        await expect(composer(alice)).to_have_value("two")
        await expect(banner).to_be_visible()
        # Escape: nothing changed, the box as it was.
        await composer(alice).press("Escape")
        await expect(composer(alice)).to_have_value("")
        await expect(banner).to_be_hidden()
        await expect(by_id(alice, two)).not_to_have_class(re.compile(r"\bediting\b"))

        # Up in a box with text moves the caret, as ever; it edits nothing.
        await composer(alice).fill("a draft")
        await composer(alice).press("ArrowUp")
        await expect(banner).to_be_hidden()
        await expect(composer(alice)).to_have_value("a draft")
        # An edit started from the Edit control, cancelled with Escape: the draft comes back.
        await by_id(alice, one).locator("button.edit").click()
        await expect(composer(alice)).to_have_value("one")
        await composer(alice).press("Escape")
        await expect(composer(alice)).to_have_value("a draft")
        # ... and with the banner's Cancel.
        await by_id(alice, one).locator("button.edit").click()
        await banner.locator("button").click()
        await expect(composer(alice)).to_have_value("a draft")
        rows = await in_thread(lambda: [stored(one), stored(two)])
        assert [row["edited_at"] for row in rows] == [None, None], rows

        # Up, new text, Enter: saved, for both; the draft back in the box.
        await composer(alice).fill("")
        await composer(alice).press("ArrowUp")
        await expect(composer(alice)).to_have_value("two")
        await composer(alice).fill("two, edited\nover two lines")
        await composer(alice).press("Enter")
        await expect(banner).to_be_hidden()
        await expect(composer(alice)).to_have_value("")
        for chat in (alice, bob):
            await expect(message(chat, "two, edited\nover two lines")).to_have_count(1)
            await expect(by_id(chat, two).locator(".edited")).to_have_count(1)
            await expect(by_id(chat, one).locator(".edited")).to_have_count(0)
        row = await in_thread(lambda: stored(two))
        assert row["text"] == "two, edited\nover two lines" and row["edited_at"] is not None
        # The order is the messages' own: an edit does not move one.
        texts = await alice.page.locator("#messages li.message p.text").all_inner_texts()
        assert texts == ["one", "two, edited\nover two lines", "from bob, the newest"], texts
        assert_clean(alice, bob)

    run_in_browser(chromium_executable, scenario)


def test_delete_asks_first_cancel_keeps_it_and_yes_leaves_a_tombstone(chromium_executable, web, people, screenshot):
    async def scenario(playwright, browser):
        alice, bob = await both_in_the_room(browser, web)
        doomed = await sent_to_both(alice, bob, "doomed")
        await pick(bob, doomed, "👍")
        await expect(chip(alice, doomed, "👍")).to_have_text("👍 1")
        item = by_id(alice, doomed)
        question = item.locator(".confirm")

        # Delete asks; Cancel keeps the message as it was.
        await expect(question).to_be_hidden()
        await item.locator("button.delete").click()
        await expect(question).to_be_visible()
        await expect(question).to_contain_text("Delete this message?")
        await question.locator("button.confirm-no").click()
        await expect(question).to_be_hidden()
        await expect(item.locator("p.text")).to_have_text("doomed")
        assert (await in_thread(lambda: stored(doomed)))["deleted"] is False

        # Delete, then yes: a tombstone for both, in its place; no text, reactions or controls.
        await item.locator("button.delete").click()
        await question.locator("button.confirm-yes").click()
        for chat in (alice, bob):
            tombstone = by_id(chat, doomed)
            await expect(tombstone.locator("p.text")).to_have_text(TOMBSTONE)
            await expect(tombstone).to_have_class(re.compile(r"\bdeleted\b"))
            await expect(tombstone.locator(".reactions, button, .picker, .confirm, .edited")).to_have_count(0)
            await expect(tombstone.locator(".author")).to_have_text("page_alice")
        await expect(room_button(alice, "Page room").locator(".preview")).to_have_text(f"You: {TOMBSTONE}")
        await expect(room_button(bob, "Page room").locator(".preview")).to_have_text(f"page_alice: {TOMBSTONE}")
        row = await in_thread(lambda: stored(doomed))
        assert row == {"text": "", "edited_at": row["edited_at"], "deleted": True, "reactions": {}}, row
        # Nothing of one's own left to edit: Up does nothing.
        await composer(alice).press("ArrowUp")
        await expect(alice.page.locator("#editing")).to_be_hidden()
        await expect(composer(alice)).to_have_value("")
        await screenshot(alice.page, "chat-page-deleted")
        assert_clean(alice, bob)

    run_in_browser(chromium_executable, scenario)


def test_reactions_from_the_picker_and_typed_own_highlighted_and_taken_back(chromium_executable, web, people,
                                                                           screenshot):
    async def scenario(playwright, browser):
        alice, bob = await both_in_the_room(browser, web)
        target = await sent_to_both(alice, bob, "react to me")

        # Bob picks 👍: a chip "👍 1" for both, pressed on bob's page only.
        await pick(bob, target, "👍")
        for chat in (alice, bob):
            await expect(chip(chat, target, "👍")).to_have_text("👍 1")
        await expect(chip(bob, target, "👍")).to_have_attribute("aria-pressed", "true")
        await expect(chip(bob, target, "👍")).to_have_class(re.compile(r"\bmine\b"))
        await expect(chip(alice, target, "👍")).to_have_attribute("aria-pressed", "false")
        await expect(chip(alice, target, "👍")).to_have_attribute("title", "page_bob")

        # Alice clicks bob's chip: hers is added.
        await chip(alice, target, "👍").click()
        for chat in (alice, bob):
            await expect(chip(chat, target, "👍")).to_have_text("👍 2")
        await expect(chip(alice, target, "👍")).to_have_attribute("aria-pressed", "true")
        await expect(chip(alice, target, "👍")).to_have_attribute("title", "page_bob, page_alice")

        # A typed emoji, after the first in order; one that is only blanks is refused on the page.
        await type_emoji(bob, target, "🦄")
        for chat in (alice, bob):
            await expect(chips(chat, target)).to_have_text(["👍 2", "🦄 1"])
        await type_emoji(bob, target, "   ")
        await expect(by_id(bob, target).locator(".picker .error")).to_have_text("Type one emoji (up to 32 characters).")
        await expect(by_id(bob, target).locator(".picker")).to_be_visible()
        await by_id(bob, target).locator("button.react-open").click()  # closes it
        await expect(by_id(bob, target).locator(".picker")).to_be_hidden()

        # Alice clicks her own chip: taken back.
        await chip(alice, target, "👍").click()
        for chat in (alice, bob):
            await expect(chips(chat, target)).to_have_text(["👍 1", "🦄 1"])
        await expect(chip(alice, target, "👍")).to_have_attribute("aria-pressed", "false")
        await expect(chip(bob, target, "👍")).to_have_attribute("aria-pressed", "true")
        row = await in_thread(lambda: stored(target))
        assert row["reactions"] == {"👍": ["page_bob"], "🦄": ["page_bob"]}, row
        await screenshot(alice.page, "chat-page-reactions")
        assert_clean(alice, bob)

    run_in_browser(chromium_executable, scenario)


def test_another_members_edit_delete_and_reaction_arrive_live_in_place(chromium_executable, web, people):
    async def scenario(playwright, browser):
        alice, bob = await both_in_the_room(browser, web)
        for text in ("b1", "b2", "b3"):
            await send(bob, text)
        ids = [await shown_id(alice, text) for text in ("b1", "b2", "b3")]
        await alice.page.evaluate("() => { window.sameDocument = true; }")

        await by_id(bob, ids[0]).locator("button.edit").click()
        await composer(bob).fill("b1, edited")
        await composer(bob).press("Enter")
        await by_id(bob, ids[1]).locator("button.delete").click()
        await by_id(bob, ids[1]).locator(".confirm button.confirm-yes").click()
        await pick(bob, ids[2], "🎉")

        await expect(by_id(alice, ids[0]).locator("p.text")).to_have_text("b1, edited")
        await expect(by_id(alice, ids[0]).locator(".edited")).to_have_count(1)
        await expect(by_id(alice, ids[1]).locator("p.text")).to_have_text(TOMBSTONE)
        await expect(chips(alice, ids[2])).to_have_text(["🎉 1"])
        # In place, in order, without a reload.
        shown = await alice.page.locator("#messages li.message[data-id]").evaluate_all(
            "items => items.map((item) => Number(item.dataset.id))")
        assert shown == ids, shown
        assert await alice.page.evaluate("() => window.sameDocument") is True
        assert_clean(alice, bob)

    run_in_browser(chromium_executable, scenario)


def test_user_text_in_messages_edits_and_emoji_stays_text(chromium_executable, web, people):
    html = "<b>x</b>"
    edited = "<i>edited</i><img src=x onerror=alert(1)>"

    async def scenario(playwright, browser):
        alice, bob = await both_in_the_room(browser, web)
        target = await sent_to_both(alice, bob, html)
        await type_emoji(bob, target, html)
        await composer(alice).press("ArrowUp")
        await expect(composer(alice)).to_have_value(html)
        await composer(alice).fill(edited)
        await composer(alice).press("Enter")
        for chat in (alice, bob):
            await expect(by_id(chat, target).locator("p.text")).to_have_text(edited)
            await expect(chip(chat, target, html)).to_have_text(f"{html} 1")
            assert await chat.page.locator("#messages b, #messages i, #messages img").count() == 0
        await expect(room_button(bob, "Page room").locator(".preview")).to_have_text(f"page_alice: {edited}")
        row = await in_thread(lambda: stored(target))
        assert row["text"] == edited and row["reactions"] == {html: ["page_bob"]}, row
        assert_clean(alice, bob)

    run_in_browser(chromium_executable, scenario)


def test_after_a_reconnect_the_changes_made_while_away_show_without_a_reload(chromium_executable, e2e, page_stack,
                                                                           people, screenshot):
    web = page_stack.web
    bob_token = people["tokens"]["bob"]

    async def scenario(playwright, browser):
        alice = await open_chat_page(browser, web, "page_alice", PASSWORD)
        page = alice.page
        status = page.locator("#connection")
        await open_room(alice, "Page room")
        texts = ("keep me", "edit me", "delete me", "react to me")
        for text in texts:
            await post_over_rest(playwright, web, bob_token, people["main"], text)
        keep, edit, delete, react = [await shown_id(alice, text) for text in texts]
        await page.evaluate("() => { window.sameDocument = true; }")
        # What the page sends on the connection it opens after the restart.
        sent: list[dict[str, Any]] = []
        page.on("websocket", lambda socket: socket.on("framesent", lambda payload: sent.append(json.loads(payload))))

        await asyncio.to_thread(page_stack.stop_gateway)
        await expect(status).to_have_attribute("data-state", "reconnecting")
        # Bob, on another gateway, changes three messages while the page is away.
        async with aiohttp.ClientSession() as session:
            bob = await Client.connect(session, e2e.gateway_a)
            try:
                await bob.authenticate({"token": bob_token, "username": "page_bob"})
                await bob.ok("edit_message", message=edit, text="edited while you were away")
                await bob.ok("delete_message", message=delete)
                await bob.ok("add_reaction", message=react, emoji="😮")
            finally:
                await bob.close()
        await post_over_rest(playwright, web, bob_token, people["main"], "new while you were away")

        await asyncio.to_thread(page_stack.start_gateway)
        await expect(status).to_have_attribute("data-state", "connected", timeout=RECONNECT_MS)
        await expect(by_id(alice, edit).locator("p.text")).to_have_text("edited while you were away")
        await expect(by_id(alice, edit).locator(".edited")).to_have_count(1)
        await expect(by_id(alice, delete).locator("p.text")).to_have_text(TOMBSTONE)
        await expect(chips(alice, react)).to_have_text(["😮 1"])
        await expect(message(alice, "new while you were away")).to_have_count(1)
        await expect(by_id(alice, keep).locator("p.text")).to_have_text("keep me")
        assert await page.evaluate("() => window.sameDocument") is True
        shown = await page.locator("#messages li.message p.text").all_inner_texts()
        assert shown == ["keep me", "edited while you were away", TOMBSTONE, "react to me",
                         "new while you were away"], shown
        # It caught up by cursor (where it had got to), not from a message id, and loaded no room again.
        syncs = [frame for frame in sent if frame.get("action") == "sync"]
        assert syncs and all(frame.get("since") for frame in syncs) and not any("after" in f for f in syncs), syncs
        assert not [frame for frame in sent if frame.get("action") == "select_room"], sent
        await screenshot(page, "chat-page-caught-up")
        assert alice.errors == [] and alice.dialogs == []

    run_in_browser(chromium_executable, scenario)
