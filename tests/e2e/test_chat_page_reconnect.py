"""The chat page heals itself: its gateway process restarts, the page reconnects, authenticates
again, `sync`s, and shows what was posted meanwhile (through the REST API); a message typed while
the connection was down is sent when it is back, and stored once. Redis restarts: the page keeps
its connection, answers the gateway's `resync` with a `sync`, and shows what its gateway missed."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Iterator

import pytest
from playwright.async_api import expect

from chat.models import ChatMessage
from scripts.stack import Stack, free_port
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
# Redis back, the gateway subscribed again (its backoff: at most 3 s), then the page's jitter
# (at most 3 s) and its sync: well inside this on a busy machine.
RESYNC_MS = 60_000
# How long the gateway may take to notice that its subscription is gone.
NOTICE_SECONDS = 15.0


@pytest.fixture
def redis_page_stack(e2e_database_url, tmp_path) -> Iterator[tuple[Stack, str, str]]:
    """A chat page on processes of its own, on the test database: its own Redis (which the test
    stops and starts again on its port), a worker, a one-process gateway and the web server.
    Yields the stack, the page's address and the gateway's."""
    tag = f"pageredis{secrets.token_hex(3)}"
    web_port = free_port()
    stack = Stack.create(log_dir=tmp_path / "logs", DATABASE_URL=e2e_database_url,
                         WORKER_RESPONSE_TOPIC=f"{tag}_response", REQUEST_TIMEOUT="5",
                         ALLOWED_ORIGINS=f"http://127.0.0.1:{web_port}", LOG_LEVEL="INFO")
    stack.env.pop("REDIS_URL", None)  # ours, always: we stop it
    try:
        stack.start_redis(free_port())
        stack.start_workers([f"{tag}_worker"])
        _, gateway_port = stack.start_gateway(processes=1, name=f"gateway-{tag}")
        stack.env["GATEWAY_URL"] = f"ws://127.0.0.1:{gateway_port}/ws"
        stack.start_web(web_port)
        yield stack, f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{gateway_port}"
    finally:
        stack.stop()


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


def _resubscriptions(metrics: str) -> float:
    """How often the gateway process lost its reply subscription, from its /metrics text."""
    [count] = re.findall(r'^chat_gateway_redis_reconnects_total\{gateway_id="[^"]+"\} (\S+)$', metrics, re.MULTILINE)
    return float(count)


def test_after_a_redis_restart_the_page_keeps_its_connection_and_shows_what_its_gateway_missed(
        chromium_executable, redis_page_stack, people, screenshot):
    stack, web, gateway = redis_page_stack
    bob_token = people["tokens"]["bob"]

    async def scenario(playwright, browser):
        alice = await open_chat_page(browser, web, "page_alice", PASSWORD)
        page = alice.page
        # The page again, its WebSocket watched from the start: what it sends and receives, and
        # every socket it opens.
        sockets = []
        received: list[dict] = []
        sent: list[dict] = []
        closed: list[str] = []

        def watch(socket) -> None:
            sockets.append(socket)
            socket.on("framereceived", lambda payload: received.append(json.loads(payload)))
            socket.on("framesent", lambda payload: sent.append(json.loads(payload)))
            socket.on("close", lambda _: closed.append(socket.url))

        page.on("websocket", watch)
        await page.reload()
        status = page.locator("#connection")
        await expect(status).to_have_attribute("data-state", "connected")
        # Every state the header shows from now on.
        await page.evaluate("""() => {
          const status = document.getElementById("connection");
          window.connectionStates = [];
          new MutationObserver(() => window.connectionStates.push(status.dataset.state))
            .observe(status, { attributes: true, attributeFilter: ["data-state"] });
        }""")
        await open_room(alice, "Page room")
        before = await post_over_rest(playwright, web, bob_token, people["main"], "before the gap")
        await expect(message(alice, "before the gap")).to_have_count(1)

        api = await playwright.request.new_context(base_url=gateway)
        try:
            lost_before = _resubscriptions(await (await api.get("/metrics")).text())
            assert await asyncio.to_thread(stack.stop_redis) == 0
            # The gateway notices that its subscription is gone ...
            loop = asyncio.get_running_loop()
            deadline = loop.time() + NOTICE_SECONDS
            while _resubscriptions(await (await api.get("/metrics")).text()) == lost_before:
                assert loop.time() < deadline, "the gateway did not notice that Redis is gone"
                await asyncio.sleep(0.1)
        finally:
            await api.dispose()
        # ... and bob posts meanwhile: stored, its live delivery lost with Redis.
        await post_over_rest(playwright, web, bob_token, people["main"], "while the gateway missed it")
        await post_over_rest(playwright, web, bob_token, people["side"], "missed in the side room")
        await asyncio.to_thread(stack.restart_redis)

        # Told to resync, the page catches up on the connection it has: no reload, no reconnect.
        await expect(message(alice, "while the gateway missed it")).to_have_count(1, timeout=RESYNC_MS)
        await expect(room_button(alice, "Side room").locator(".badge")).to_have_text("1 unread")
        await screenshot(page, "chat-page-resynced")
        resyncs = [frame for frame in received if frame.get("action") == "resync"]
        assert len(resyncs) == 1 and "uuid" not in resyncs[0], received
        # One sync from now when the page loaded, then one from the cursor of the last change
        # it processed before the gap (its mark_read, or the message's live reply).
        processed = received[:received.index(resyncs[0])]
        last_cursor = [frame["cursor"] for frame in processed
                       if frame.get("status") == "success" and "cursor" in frame][-1]
        assert any(isinstance(frame.get("message"), dict) and frame["message"]["id"] == before["id"]
                   for frame in processed), processed
        syncs = [frame["since"] for frame in sent if frame.get("action") == "sync"]
        assert syncs == ["", last_cursor], syncs
        assert len(sockets) == 1 and closed == []
        assert await page.evaluate("window.connectionStates") == []
        await expect(status).to_have_attribute("data-state", "connected")
        # Live again, both ways.
        await post_over_rest(playwright, web, bob_token, people["main"], "after the gap")
        await expect(message(alice, "after the gap")).to_have_count(1)
        await send(alice, "still here")
        await expect(message(alice, "still here")).to_have_class("message own")
        texts = await page.locator("#messages li.message p.text").all_inner_texts()
        assert texts == ["before the gap", "while the gateway missed it", "after the gap", "still here"], texts
        assert alice.errors == [] and alice.dialogs == []

    run_in_browser(chromium_executable, scenario)
