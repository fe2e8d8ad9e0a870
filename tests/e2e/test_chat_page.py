"""The chat page in real headless Chromium (Playwright driving the system Chromium) against the
real stack: log in, pick a room, chat both ways; user text stays text."""

from __future__ import annotations

import asyncio

import pytest
from django.contrib.auth import get_user_model
from playwright.async_api import async_playwright

from chat.models import ChatRoom
from tests.e2e.conftest import CHROMIUM_FLAGS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-test-password"
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def people():
    User = get_user_model()
    alice = User.objects.create_user("page_alice", password=PASSWORD)
    bob = User.objects.create_user("page_bob", password=PASSWORD)
    room = ChatRoom.objects.create(name="Page room")
    room.users.set([alice, bob])
    return room


async def open_chat(browser, web: str, username: str):
    context = await browser.new_context(viewport={"width": 900, "height": 600})
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto(f"{web}/")
    await page.fill("#id_username", username)
    await page.fill("#id_password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#status:text('connected')")
    await page.click("nav button:text('Page room')")
    await page.wait_for_selector("#text:not([disabled])")
    return page, dialogs


def test_two_people_chat_and_text_stays_text(chromium_executable, web, people, screenshot):
    async def scenario():
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_FLAGS)
            try:
                alice, alice_dialogs = await open_chat(browser, web, "page_alice")
                bob, bob_dialogs = await open_chat(browser, web, "page_bob")

                await alice.fill("#text", "hello bob")
                await alice.press("#text", "Enter")
                await bob.wait_for_selector("#messages li:has-text('page_alice: hello bob')")
                await alice.wait_for_selector("#messages li.own:has-text('hello bob')")

                await bob.fill("#text", XSS)
                await bob.click("#composer button")
                await alice.wait_for_selector(f"#messages li:has-text('{XSS}')")
                # Shown as text: no <img> element was made from it, and nothing ran.
                assert await alice.locator("#messages img").count() == 0
                assert alice_dialogs == [] and bob_dialogs == []
                await screenshot(alice, "chat-page")
                texts = await alice.locator("#messages li").all_inner_texts()
                assert [t.split("] ", 1)[1] for t in texts] == ["page_alice: hello bob", f"page_bob: {XSS}"]
            finally:
                await browser.close()

    asyncio.run(scenario())
