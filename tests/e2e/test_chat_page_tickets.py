"""The chat page holds no permanent credential: it authenticates its WebSocket with a short-lived
ticket fetched through its session before each connection, and a ticket of a page that logged out
is refused."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from playwright.async_api import expect

from tests.e2e.client import Client
from tests.e2e.test_chat_page import assert_clean, log_in, patient_expect, people, run_in_browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

__all__ = ["patient_expect", "people"]  # the fixtures, shared with test_chat_page


class Recorder:
    """What a page got over HTTP and its WebSockets, and what it sent over them."""

    def __init__(self, page) -> None:
        self.responses: list[Any] = []
        self.frames_sent: list[str] = []
        self.frames_received: list[str] = []
        page.on("response", lambda response: self.responses.append(response))
        page.on("websocket", self.on_websocket)

    def on_websocket(self, socket) -> None:
        socket.on("framesent", lambda payload: self.frames_sent.append(payload))
        socket.on("framereceived", lambda payload: self.frames_received.append(payload))

    def authenticate_frames(self) -> list[dict[str, Any]]:
        frames = [json.loads(frame) for frame in self.frames_sent]
        return [frame for frame in frames if frame.get("action") == "authenticate"]

    async def bodies(self) -> list[str]:
        texts = []
        for response in self.responses:
            if not 300 <= response.status < 400:  # a redirect has no body to read
                texts.append((await response.body()).decode(errors="replace"))
        return texts


def test_the_page_never_receives_the_users_permanent_token(chromium_executable, web, people):
    token = people["tokens"]["alice"]

    async def scenario(playwright, browser):
        alice = await log_in(browser, web, "alice")
        seen = Recorder(alice.page)
        await alice.page.reload()
        await expect(alice.page.locator("#connection")).to_have_attribute("data-state", "connected")
        await expect(alice.page.locator("#room-list .room-name").first).to_be_visible()

        [authenticate] = seen.authenticate_frames()
        assert set(authenticate) == {"uuid", "action", "ticket"}, authenticate
        paths = [(response.request.method, urlsplit(response.url).path) for response in seen.responses]
        assert ("POST", "/api/auth/ticket/") in paths, paths
        assert not [path for _, path in paths if "token" in path], paths
        # Nothing the page got or sent, over HTTP or the WebSocket, nor its document, holds the token.
        everything = [*await seen.bodies(), *seen.frames_sent, *seen.frames_received,
                      await alice.page.content()]
        assert not [text for text in everything if token in text]
        assert_clean(alice)

    run_in_browser(chromium_executable, scenario)


def test_a_ticket_of_a_page_that_logged_out_is_refused_over_the_websocket(chromium_executable, e2e, web, people):
    async def authenticate(session: aiohttp.ClientSession, ticket: str) -> dict[str, Any]:
        client = await Client.connect(session, e2e.gateway_a)
        try:
            return await client.request("authenticate", ticket=ticket)
        finally:
            await client.ws.close()

    async def scenario(playwright, browser):
        alice = await log_in(browser, web, "alice")
        seen = Recorder(alice.page)
        await alice.page.reload()
        await expect(alice.page.locator("#connection")).to_have_attribute("data-state", "connected")
        [frame] = seen.authenticate_frames()
        ticket = frame["ticket"]
        async with aiohttp.ClientSession() as session:
            # Good before the logout (and more than once within its lifetime: a reconnect).
            reply = await authenticate(session, ticket)
            assert (reply["status"], reply["user"]) == ("success", {"username": "page_alice"}), reply

            await alice.page.click("header form button[type=submit]")  # Log out
            await expect(alice.page.locator("#id_username")).to_be_visible()
            reply = await authenticate(session, ticket)
            assert (reply["status"], reply["error_code"]) == ("error", "invalid_token"), reply
        # Another session of the same user is not ended by this one's logout.
        bob = await log_in(browser, web, "alice")
        await expect(bob.page.locator("#connection")).to_have_attribute("data-state", "connected")

    run_in_browser(chromium_executable, scenario)
