"""chat-client.js and the page's pure modules, in real headless Chromium, against a fake
WebSocket that the test scripts: the cases a real gateway shows rarely or only at bad moments
(a reply lost with the connection, a `timeout` error, a full queue). The modules are served from
the source tree by Playwright's request routing: no server, nothing from the network."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright

from tests.e2e.conftest import CHROMIUM_FLAGS

pytestmark = pytest.mark.e2e

STATIC = Path(__file__).resolve().parents[2] / "chat" / "static" / "chat"
FAKES = Path(__file__).resolve().parents[1] / "js" / "fake-socket.mjs"
# Not a secure context (plain HTTP, not localhost): what a page served over HTTP on a LAN gets.
ORIGIN = "http://chat.test"
# A bound on one scenario, for a client gone wrong; the fake answers at once.
SCENARIO_BOUND_MS = 20_000

# What every scenario has in scope: tests/js/fake-socket.mjs (the WebSocket look-alike and reply
# builders of the Node tests), whose `sync` frames `FakeSocket.feed` answers by default with no
# events and a cursor (the one asked from, or "c0" from now), what every client's first
# authentication needs; the helpers below; and chat-client.js.
FAKE_SOCKET = """
const fakes = await import("/tests/fake-socket.mjs");
const { FakeSocket, ok, fail, msg, live, nextEvent } = fakes;
FakeSocket.feed = (socket, frame) => socket.reply(ok(frame, { events: [], cursor: frame.since || "c0", has_more: false }));
// The authenticate reply, with the workers' action catalogue as a real worker sends it.
const signedIn = (frame) => fakes.signedIn(frame, CATALOGUE);
// A sync reply's events: new_message events of these messages, each with its cursor "e<id>".
const events = (messages) => messages.map((m) => ({ action: "new_message", room: m.room, message: m, cursor: `e${m.id}` }));
// A sync reply: the events of `messages`, the cursor of the last (or the one asked from).
const page = (frame, messages, hasMore = false) => ok(frame, {
  events: events(messages), cursor: messages.length ? `e${messages.at(-1).id}` : frame.since, has_more: hasMore });
// A list_rooms reply: room r1, its newest message `lastId`.
const oneRoom = (frame, lastId) => ok(frame, { rooms: [
  { id: "r1", name: "R", is_direct: false, members: [], last_message: msg(lastId), unread_count: 0 }] });
// A gateway that authenticates anyone, lists room r1 (its newest message `lastId`) and answers
// the other actions with `handlers[action](socket, frame)`.
const gateway = (lastId, handlers) => (socket, frame) => {
  if (frame.action === "authenticate") socket.reply(signedIn(frame));
  else if (frame.action === "list_rooms") socket.reply(oneRoom(frame, lastId));
  else handlers[frame.action]?.(socket, frame);
};
// Start a client, list its rooms, have the gateway drop the connection with `code`, and wait until
// the client is ready again; the message ids it emitted are in `ids`.
const dropAndCatchUp = async (code) => {
  const client = newClient();
  const ids = [];
  client.addEventListener("message", (e) => ids.push(e.detail.message.id));
  client.start();
  await nextEvent(client, "ready");
  await client.listRooms();
  FakeSocket.sockets[0].close(code, "");
  const ready = await nextEvent(client, "ready");
  return { ids, ready };
};
// The cursor each connection's syncs were sent from ("": the first, from now).
const syncSinces = () => FakeSocket.sockets.map((s) => s.sent.filter((f) => f.action === "sync").map((f) => f.since));
const { ChatClient, ChatError, backoffDelay, SUBPROTOCOL } = await import("/static/chat/chat-client.js");
const newClient = (options = {}) => new ChatClient({
  url: "ws://gateway.test/ws", getToken: async () => "token", WebSocket: FakeSocket,
  backoff: { initial: 5, max: 20 }, ...options,
});
"""


async def run_in_browser(executable: str, body: str) -> Any:
    """Run `body` (the inside of an async function, which returns a JSON-able value) in a page
    that has FAKE_SOCKET's names in scope, and CATALOGUE: the actions the workers' registry declares."""
    from workers.actions import registry

    catalogue = json.dumps(registry.catalogue()["actions"])

    async def serve(route) -> None:
        path = route.request.url[len(ORIGIN):]
        if path.startswith("/static/chat/") or path == "/tests/fake-socket.mjs":
            source = FAKES if path.startswith("/tests/") else STATIC / path.rsplit("/", 1)[1]
            await route.fulfill(body=source.read_text(), content_type="text/javascript")
        else:
            await route.fulfill(body="<!doctype html><title>client</title>", content_type="text/html")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.route(f"{ORIGIN}/**", serve)
            await page.goto(f"{ORIGIN}/")
            # A scenario that hangs fails after SCENARIO_BOUND_MS instead of at the suite's timeout.
            result = await page.evaluate(f"""async () => {{
                const scenario = (async () => {{ const CATALOGUE = {catalogue}; {FAKE_SOCKET}\n{body} }})();
                const hang = new Promise((_, reject) => setTimeout(
                    () => reject(new Error("scenario still waiting after {SCENARIO_BOUND_MS} ms")), {SCENARIO_BOUND_MS}));
                return Promise.race([scenario, hang]);
            }}""")
            assert errors == [], errors
            return result
        finally:
            await browser.close()


def in_browser(executable: str, body: str) -> Any:
    return asyncio.run(run_in_browser(executable, body))


def test_backoff_doubles_up_to_its_cap_with_jitter(chromium_executable):
    delays = in_browser(chromium_executable, """
        const options = { initial: 500, max: 10000, factor: 2 };
        return [0, 1, 2, 3, 4, 5, 6, 10].map((attempt) => [
          backoffDelay(attempt, options, () => 0), backoffDelay(attempt, options, () => 0.999999)]);
    """)
    ceilings = [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]
    # Between half the ceiling and all of it: clients dropped together do not come back together.
    assert delays == [[c // 2, c] for c in ceilings]


def test_a_message_whose_reply_was_lost_is_sent_again_with_its_uuid_then_sync_from_the_cursor(chromium_executable):
    result = in_browser(chromium_executable, """
        let stored = null;
        FakeSocket.server = (socket, frame) => {
          const first = socket === FakeSocket.sockets[0];
          if (frame.action === "authenticate") socket.reply(signedIn(frame));
          else if (frame.action === "list_rooms") socket.reply(oneRoom(frame, 6));
          else if (frame.action === "new_message" && first) socket.close(1006, "");  // no reply
          else if (frame.action === "new_message") {
            stored = stored || msg(9, { text: frame.text });
            socket.reply(ok(frame, { room: "r1", message: stored, cursor: "c9" }));
          }
        };
        FakeSocket.feed = (socket, frame) => socket.reply(frame.since === ""
          ? ok(frame, { events: [], cursor: "c0", has_more: false })
          : page(frame, [msg(8), msg(9, { text: "hello" })]));
        const client = newClient();
        const seen = [];
        const states = [];
        const cursors = [];
        client.addEventListener("message", (e) => { seen.push([e.detail.message.id, e.detail.source, e.detail.uuid]); cursors.push(client.cursor); });
        client.addEventListener("state", (e) => states.push(e.detail.state));
        client.addEventListener("ready", (e) => seen.push(["ready", e.detail.reconnected]));
        client.start();
        await nextEvent(client, "ready");
        await client.listRooms();
        FakeSocket.sockets[0].reply(live(msg(7)));
        const sent = await client.sendMessage("r1", "hello", { uuid: "uuid-1" });
        await nextEvent(client, "ready");
        return {
          sent, seen, cursors, states: [...new Set(states)], cursor: client.cursor,
          frames: FakeSocket.sockets.map((socket) => socket.sent.map((f) => [f.action, f.uuid === "uuid-1" ? "uuid-1" : null, f.since ?? null])),
        };
    """)
    assert result["sent"]["id"] == 9
    # The first connection took a cursor from now before anything else, then lost the reply; the
    # second authenticated, sent the same uuid again, and only then asked for every change after
    # the last one processed before the loss (7's): not after the retry's, which came after the gap.
    assert result["frames"] == [
        [["authenticate", None, None], ["sync", None, ""], ["list_rooms", None, None], ["new_message", "uuid-1", None]],
        [["authenticate", None, None], ["new_message", "uuid-1", None], ["sync", None, "c7"]],
    ]
    # Each message once: 9 from the retry's reply, 8 from the sync (9 again there is skipped).
    assert result["seen"] == [["ready", False], [7, "live", "theirs"], [9, "live", "uuid-1"], [8, "sync", None],
                              ["ready", True]]
    assert result["cursors"][:2] == ["c0", "c7"]  # a live reply's cursor, taken once it is processed
    assert result["states"] == ["connecting", "connected", "reconnecting"]
    assert result["cursor"] == "e9"


def test_every_connection_asks_for_the_subprotocol_chat_v1(chromium_executable):
    asked = in_browser(chromium_executable, """
        FakeSocket.server = gateway(3, {});
        const { ready } = await dropAndCatchUp(1006);
        return { reconnected: ready.reconnected, protocols: FakeSocket.sockets.map((socket) => socket.protocols),
                 exported: SUBPROTOCOL, sinces: syncSinces() };
    """)
    # The first connection and the one after the loss; the second catches up from the first's cursor.
    assert asked == {"reconnected": True, "protocols": ["chat.v1", "chat.v1"], "exported": "chat.v1",
                     "sinces": [[""], ["c0"]]}


def test_sync_pages_until_nothing_more_and_resumes_after_a_loss_from_where_it_was(chromium_executable):
    result = in_browser(chromium_executable, """
        let syncs = 0;
        FakeSocket.server = gateway(10, {});
        FakeSocket.feed = (socket, frame) => {
          if (frame.since === "") { socket.reply(ok(frame, { events: [], cursor: "e10", has_more: false })); return; }
          syncs += 1;
          if (syncs === 2) { socket.close(1006, ""); return; }  // lost in the middle of the catch-up
          // The fake's own cursors are "e<id>"; the client never reads them.
          const after = Number(frame.since.slice(1));
          socket.reply(page(frame, [1, 2].map((n) => msg(after + n)), after + 2 < 16));
        };
        const { ids } = await dropAndCatchUp(1001);
        return { ids, sinces: syncSinces() };
    """)
    # The first catch-up got 11 and 12, then its connection went: the next one goes on from 12's
    # cursor (what it had processed), until has_more is false.
    assert result["sinces"] == [[""], ["e10", "e12"], ["e12", "e14"]]
    assert result["ids"] == [11, 12, 13, 14, 15, 16]


def test_a_catch_up_that_fails_on_an_open_connection_is_done_again_on_a_new_one(chromium_executable):
    result = in_browser(chromium_executable, """
        let syncs = 0;
        FakeSocket.server = gateway(4, {});
        FakeSocket.feed = (socket, frame) => {
          if (frame.since === "") { socket.reply(ok(frame, { events: [], cursor: "e4", has_more: false })); return; }
          syncs += 1;
          socket.reply(syncs === 1 ? fail(frame, "server_error") : page(frame, [msg(5)]));
        };
        const { ids, ready } = await dropAndCatchUp(4008);
        return { ids, reconnected: ready.reconnected, sockets: FakeSocket.sockets.length, sinces: syncSinces() };
    """)
    assert result == {"ids": [5], "reconnected": True, "sockets": 3, "sinces": [[""], ["e4"], ["e4"]]}


def test_a_cursor_the_feed_no_longer_keeps_is_replaced_by_one_from_now_and_the_page_told_to_reload(
        chromium_executable):
    result = in_browser(chromium_executable, """
        FakeSocket.server = gateway(4, {});
        FakeSocket.feed = (socket, frame) => socket.reply(frame.since === "c4" ? fail(frame, "cursor_expired")
          : ok(frame, { events: [], cursor: `fresh${FakeSocket.sockets.length}`, has_more: false }));
        const client = newClient();
        const seen = [];
        client.addEventListener("expired", () => seen.push(["expired", client.cursor]));
        client.addEventListener("ready", (e) => seen.push(["ready", e.detail.reconnected]));
        client.start();
        await nextEvent(client, "ready");
        FakeSocket.sockets[0].reply(live(msg(4)));
        FakeSocket.sockets[0].close(1006, "");
        await nextEvent(client, "ready");
        return { seen, sinces: syncSinces(), sockets: FakeSocket.sockets.length };
    """)
    # A fresh cursor first, then `expired` (the page loads its rooms and the open room again).
    assert result == {"seen": [["ready", False], ["expired", "fresh2"], ["ready", True]],
                      "sinces": [[""], ["c4", ""]], "sockets": 2}


# The gateway's own frame after its Redis subscription came back: no uuid.
RESYNC = 'const resync = { action: "resync", reason: "bus gap" };'


def test_a_resync_is_answered_with_one_sync_from_the_cursor_after_its_jitter_on_the_same_connection(
        chromium_executable):
    result = in_browser(chromium_executable, RESYNC + """
        FakeSocket.server = gateway(7, {});
        const all = [msg(8), msg(9), msg(10)];
        FakeSocket.feed = (socket, frame) => socket.reply(frame.since === ""
          ? ok(frame, { events: [], cursor: "c0", has_more: false })
          : page(frame, all.slice(all.findIndex((m) => `c${m.id - 1}` === frame.since))));
        const client = newClient({ resyncJitter: 40, random: () => 0.5 });
        const seen = [];
        client.addEventListener("message", (e) => seen.push([e.detail.message.id, e.detail.source]));
        client.addEventListener("resync", (e) => seen.push(["resync", e.detail.reason, e.detail.syncIn]));
        client.addEventListener("ready", (e) => seen.push(["ready", e.detail.reconnected, e.detail.resynced]));
        client.start();
        await nextEvent(client, "ready");
        await client.listRooms();
        const socket = FakeSocket.sockets[0];
        socket.reply(live(msg(7)));
        const caughtUp = nextEvent(client, "ready");
        socket.reply(resync);
        // After the gap, live again: 10 arrives before the catch-up, which still starts at 7's cursor.
        socket.reply(live(msg(10)));
        const during = client.cursor;
        socket.reply(resync);  // one catch-up is waiting already: nothing more
        await caughtUp;
        return { seen, during, sinces: syncSinces(), sockets: FakeSocket.sockets.length, state: client.state,
                 cursor: client.cursor };
    """)
    assert result["sinces"] == [["", "c7"]]
    assert result["sockets"] == 1 and result["state"] == "connected"
    # The jitter is drawn once (0.5 of 40 ms); each message once, 10 live, 8 and 9 from the sync.
    assert result["seen"] == [["ready", False, False], [7, "live"], ["resync", "bus gap", 20], [10, "live"],
                              [8, "sync"], [9, "sync"], ["ready", False, True]]
    assert result["during"] == "c7" and result["cursor"] == "e10"


def test_a_resync_during_a_catch_up_brings_one_more_sync_from_where_it_got_to(chromium_executable):
    result = in_browser(chromium_executable, RESYNC + """
        let syncs = 0;
        FakeSocket.server = gateway(7, {});
        FakeSocket.feed = (socket, frame) => {
          if (frame.since === "") { socket.reply(ok(frame, { events: [], cursor: "e7", has_more: false })); return; }
          syncs += 1;
          if (syncs === 1) socket.reply(resync);  // a second gap while the first catch-up runs
          socket.reply(page(frame, syncs === 1 ? [msg(8)] : [msg(9)]));
        };
        const client = newClient({ resyncJitter: 10 });
        const ids = [];
        client.addEventListener("message", (e) => ids.push(e.detail.message.id));
        client.start();
        await nextEvent(client, "ready");
        await client.listRooms();
        FakeSocket.sockets[0].reply(resync);
        await nextEvent(client, "ready");
        await nextEvent(client, "ready");
        return { ids, sinces: syncSinces(), sockets: FakeSocket.sockets.length };
    """)
    # The second catch-up starts where the first one got to (8's cursor), on the same connection.
    assert result == {"ids": [8, 9], "sinces": [["", "e7", "e8"]], "sockets": 1}


def test_a_resync_before_the_first_cursor_is_ignored_and_one_cut_short_by_a_loss_is_the_reconnect_catch_up(
        chromium_executable):
    result = in_browser(chromium_executable, RESYNC + """
        FakeSocket.server = gateway(7, {});
        FakeSocket.feed = (socket, frame) => {
          // Before the first cursor: nothing to be complete about, the page loads after it.
          if (frame.since === "") socket.reply(resync);
          socket.reply(frame.since === "" ? ok(frame, { events: [], cursor: "e7", has_more: false }) : page(frame, [msg(8)]));
        };
        const client = newClient({ resyncJitter: 100, random: () => 0.5 });
        const readies = [];
        client.addEventListener("ready", (e) => readies.push([e.detail.reconnected, e.detail.resynced]));
        client.start();
        await nextEvent(client, "ready");
        await client.listRooms();
        FakeSocket.sockets[0].reply(resync);
        FakeSocket.sockets[0].close(1006, "");  // before the jitter's 50 ms are up
        await nextEvent(client, "ready");
        // Past the jitter of the first connection's catch-up, which must not run any more.
        await new Promise((resolve) => setTimeout(resolve, 150));
        return { sinces: syncSinces(), readies };
    """)
    assert result == {"sinces": [[""], ["e7"]], "readies": [[False, False], [True, False]]}


def test_a_room_being_created_when_the_connection_drops_is_not_sent_again(chromium_executable):
    result = in_browser(chromium_executable, """
        FakeSocket.server = (socket, frame) => {
          if (frame.action === "authenticate") socket.reply(signedIn(frame));
          else if (frame.action === "create_room") socket.close(1006, "");
        };
        const client = newClient();
        client.start();
        await nextEvent(client, "ready");
        const outcome = await client.createRoom("Plans", ["bob"]).then(() => "created", (error) => error.code);
        await nextEvent(client, "ready");
        return { outcome, actions: FakeSocket.sockets.map((s) => s.sent.map((f) => f.action)) };
    """)
    # Sending it again could make a second room: the caller is told instead.
    assert result == {"outcome": "connection_lost",
                      "actions": [["authenticate", "sync", "create_room"], ["authenticate", "sync"]]}


def test_what_is_resent_is_what_the_servers_catalogue_says(chromium_executable):
    # An action the client has never heard of (a host project's own) is resent because the
    # authenticate reply marks it `retry`; one marked `retry: false` is not; nothing is before
    # the first authentication (the catalogue is not known yet), but for ping.
    result = in_browser(chromium_executable, """
        const catalogue = { approve_order: { retry: true }, cancel_order: { retry: false } };
        let approvals = 0;
        FakeSocket.server = (socket, frame) => {
          if (frame.action === "authenticate") socket.reply(ok(frame, { user: { username: "alice" }, actions: catalogue }));
          else if (frame.action === "cancel_order" || (frame.action === "approve_order" && ++approvals === 1)) socket.close(1006, "");
          else socket.reply(ok(frame));
        };
        const client = newClient();
        const before = ["approve_order", "ping"].map((action) => client.mayRetry(action));
        client.start();
        await nextEvent(client, "ready");
        const after = ["approve_order", "cancel_order", "new_message", "ping"].map((action) => client.mayRetry(action));
        const approved = await client.request("approve_order", { order: 7 }, { uuid: "a-1" }).then(() => "ok", (e) => e.code);
        const cancelled = await client.request("cancel_order", { order: 7 }, { uuid: "c-1" }).then(() => "ok", (e) => e.code);
        return { before, after, approved, cancelled,
                 sent: FakeSocket.sockets.map((s) => s.sent.filter((f) => f.action.endsWith("_order")).map((f) => f.uuid)) };
    """)
    assert result["before"] == [False, True]
    assert result["after"] == [True, False, False, True]
    assert result["approved"] == "ok"
    assert result["cancelled"] == "connection_lost"
    assert result["sent"][:2] == [["a-1"], ["a-1", "c-1"]]  # the third connection gets neither


def test_a_timeout_error_is_retried_with_the_same_uuid_and_other_errors_are_not(chromium_executable):
    result = in_browser(chromium_executable, """
        let tries = 0;
        FakeSocket.server = (socket, frame) => {
          if (frame.action === "authenticate") socket.reply(signedIn(frame));
          else if (frame.action === "new_message" && frame.text === "slow") {
            tries += 1;
            socket.reply(tries < 3 ? fail(frame, "timeout") : ok(frame, { room: "r1", message: msg(5, { text: "slow" }) }));
          } else if (frame.action === "new_message") socket.reply(fail(frame, "empty_text"));
        };
        const client = newClient();
        client.start();
        await nextEvent(client, "ready");
        const sent = await client.sendMessage("r1", "slow", { uuid: "u-slow" });
        const refused = await client.sendMessage("r1", " ").then(() => null, (error) => [error.name, error.code]);
        return { sent: sent.id, refused, uuids: FakeSocket.sockets[0].sent.filter((f) => f.text === "slow").map((f) => f.uuid) };
    """)
    assert result == {"sent": 5, "refused": ["ChatError", "empty_text"], "uuids": ["u-slow"] * 3}


def test_requests_wait_while_disconnected_up_to_a_bound(chromium_executable):
    result = in_browser(chromium_executable, """
        let release;
        const token = new Promise((resolve) => { release = resolve; });
        FakeSocket.server = (socket, frame) => {
          if (frame.action === "authenticate") socket.reply(signedIn(frame));
          else if (frame.action === "ping") socket.reply(ok(frame, { server_time: 1e9, connections: 1 }));
        };
        const client = newClient({ getToken: () => token, maxQueued: 3 });
        client.start();
        const waiting = [client.ping(), client.ping(), client.ping()];
        const refused = await client.ping().then(() => null, (error) => error.code);
        release("token");
        const answers = await Promise.all(waiting);
        return { refused, answered: answers.length, pending: client.pendingCount };
    """)
    assert result == {"refused": "queue_full", "answered": 3, "pending": 0}


def test_no_more_than_max_in_flight_requests_are_sent_at_once(chromium_executable):
    result = in_browser(chromium_executable, """
        const held = [];
        let most = 0;
        FakeSocket.server = (socket, frame) => {
          if (frame.action === "authenticate") { socket.reply(signedIn(frame)); return; }
          held.push(frame);
          most = Math.max(most, held.length);
          if (held.length === 4) for (const f of held.splice(0)) socket.reply(ok(f, { online: [] }));
        };
        const client = newClient({ maxInFlight: 4 });
        client.start();
        await nextEvent(client, "ready");
        await Promise.all(Array.from({ length: 12 }, () => client.whoIsOnline("r1")));
        return { most, sent: FakeSocket.sockets[0].sent.length };
    """)
    assert result == {"most": 4, "sent": 14}  # authenticate, the first sync and the 12


def test_broadcasts_become_events(chromium_executable):
    result = in_browser(chromium_executable, """
        FakeSocket.server = (socket, frame) => {
          if (frame.action !== "authenticate") return;
          socket.reply(signedIn(frame));
          const other = { uuid: "theirs", status: "success" };
          socket.reply({ ...other, action: "new_message", room: "r1", message: msg(3) });
          socket.reply({ ...other, action: "new_message", room: "r1", message: msg(3) });  // a retry's copy
          socket.reply({ ...other, action: "edit_message", room: "r1", message: { ...msg(3, { text: "edited" }), edited_at: 2e9 } });
          socket.reply({ ...other, action: "typing", room: "r1", user: { username: "bob" } });
          socket.reply({ ...other, action: "create_room", room: { id: "r2", name: "New", is_direct: false, members: [], last_message: null, unread_count: 0 } });
          socket.reply({ ...other, action: "leave_room", room: "r1", user: { username: "bob" } });
          socket.reply({ ...other, action: "mark_read", room: "r1", message: 3, last_read_id: 3, unread_count: 0 });
          socket.reply({ uuid: "x", action: "typing", room: "r9", status: "error", error_code: "invalid_room_id", error_message: "Invalid room id" });
        };
        const client = newClient();
        const seen = [];
        for (const type of ["message", "messagechange", "typing", "room", "leave", "read", "error"]) {
          client.addEventListener(type, (e) => seen.push([type, JSON.stringify(e.detail).slice(0, 40)]));
        }
        client.start();
        await nextEvent(client, "error");
        return seen.map(([type]) => type);
    """)
    assert result == ["message", "messagechange", "typing", "room", "leave", "read", "error"]


COMPOSER_TEXTS = [
    ("hello", {"kind": "message", "text": "hello"}),
    ("  ", {"kind": "empty"}),
    ("line one\nline two", {"kind": "message", "text": "line one\nline two"}),
    ("//etc/hosts", {"kind": "message", "text": "/etc/hosts"}),
    ("/msg bob see you\nlater", {"kind": "command", "name": "msg", "to": "bob", "text": "see you\nlater"}),
    ("/MSG bob hi", {"kind": "command", "name": "msg", "to": "bob", "text": "hi"}),
    ("/msg bob", {"kind": "error", "message": "Usage: /msg USER TEXT"}),
    ("/msg bob    ", {"kind": "error", "message": "Usage: /msg USER TEXT"}),
    ("/who", {"kind": "command", "name": "who"}),
    ("/time", {"kind": "command", "name": "time"}),
    ("/help", {"kind": "command", "name": "help"}),
    ("/nick zed", {"kind": "error",
                   "message": 'Unknown command: /nick. Type /help for the list; //text sends "/text".'}),
]


def test_what_the_composer_text_means(chromium_executable):
    parsed = in_browser(chromium_executable, f"""
        const {{ parseInput }} = await import("/static/chat/commands.js");
        const {{ parseMembers }} = await import("/static/chat/forms.js");
        return {{
          inputs: {json.dumps([text for text, _ in COMPOSER_TEXTS])}.map(parseInput),
          members: parseMembers(" bob, carol  dave,bob "),
        }};
    """)
    assert parsed["inputs"] == [expected for _, expected in COMPOSER_TEXTS]
    assert parsed["members"] == ["bob", "carol", "dave"]


def test_credentials_are_asked_for_before_every_connection_and_a_ticket_is_sent_as_ticket(chromium_executable):
    result = in_browser(chromium_executable, """
        let issued = 0;
        FakeSocket.server = gateway(1, {});
        const client = newClient({ getToken: undefined, credentials: async () => ({ ticket: `ticket-${++issued}` }) });
        client.start();
        await nextEvent(client, "ready");
        FakeSocket.sockets[0].close(1012, "");
        await nextEvent(client, "ready");
        const tokenClient = newClient();
        tokenClient.start();
        await nextEvent(tokenClient, "ready");
        const auth = (socket) => { const { uuid, ...frame } = socket.sent.find((f) => f.action === "authenticate"); return frame; };
        return FakeSocket.sockets.map(auth);
    """)
    # A fresh ticket for the reconnection (the first may have expired), never a token beside it;
    # getToken still works, as a token.
    assert result == [{"action": "authenticate", "ticket": "ticket-1"}, {"action": "authenticate", "ticket": "ticket-2"},
                      {"action": "authenticate", "token": "token"}]


def test_server_events_reach_their_handlers_until_unsubscribed(chromium_executable):
    result = in_browser(chromium_executable, """
        FakeSocket.server = gateway(1, { ping: (socket, frame) => {
          socket.reply({ action: "event", event: "invoice.paid", data: { invoice: 2 } });
          socket.reply(ok(frame, { server_time: 1, connections: 1 }));
        } });
        const client = newClient();
        const seen = [];
        const off = client.on("invoice.paid", (data, name) => seen.push(["on", name, data.invoice]));
        client.on("poll:closed", (data) => seen.push(["poll", data.poll]));
        client.addEventListener("event:invoice.paid", (e) => seen.push(["listener", e.detail.event, e.detail.data.invoice]));
        client.addEventListener("error", (e) => seen.push(["error", e.detail.code]));
        client.start();
        await nextEvent(client, "ready");
        const socket = FakeSocket.sockets[0];
        socket.reply({ action: "event", event: "invoice.paid", data: { invoice: 1 } });
        socket.reply({ action: "event", event: "poll:closed", data: { poll: 7 } });
        socket.reply({ action: "event", event: "nobody.listens", data: {} });
        // A frame with a uuid answers a request: no server event, whatever its action says.
        socket.reply({ uuid: "theirs", action: "event", event: "invoice.paid", data: { invoice: 9 } });
        off();
        await client.ping();  // its gateway sends one more invoice.paid first: only the listener hears it
        return { seen, state: client.state };
    """)
    assert result == {"seen": [["on", "invoice.paid", 1], ["listener", "invoice.paid", 1], ["poll", 7],
                               ["listener", "invoice.paid", 2]], "state": "connected"}
