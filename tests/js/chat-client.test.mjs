// chat-client.js under Node's test runner. Two kinds of tests: against FakeSocket
// (tests/js/fake-socket.mjs), which need no server; and one against the real gateway and workers
// that tests/e2e/test_js_client.py starts: it passes the addresses and two users' tokens in the
// environment, and without them that test is skipped. Run by hand: node --test tests/js/ (Node
// 20: with --experimental-websocket for the real-stack test), with CHAT_WS_URL_A=…
// CHAT_WS_URL_B=… CHAT_TOKEN_A=… CHAT_TOKEN_B=… CHAT_ROOM=… CHAT_USER_A=… for it.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatClient, ChatError } from "../../chat/static/chat/chat-client.js";
import { FakeSocket, fail, live, msg, nextEvent, ok, signedIn } from "./fake-socket.mjs";

const REAL_STACK = Boolean(process.env.CHAT_WS_URL_A);

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through tests/e2e/test_js_client.py`);
  return value;
};

const started = async (url, token) => {
  const client = new ChatClient({ url, getToken: async () => token });
  const ready = nextEvent(client, "ready");
  client.start();
  await ready;
  return client;
};

test("two clients chat through the gateway, and the catalogue says what is resent", { skip: !REAL_STACK && "no stack: run through tests/e2e/test_js_client.py" }, async () => {
  const alice = await started(env("CHAT_WS_URL_A"), env("CHAT_TOKEN_A"));
  const bob = await started(env("CHAT_WS_URL_B"), env("CHAT_TOKEN_B"));
  try {
    assert.equal(alice.user.username, env("CHAT_USER_A"));
    assert.equal(alice.mayRetry("new_message"), true);
    assert.equal(alice.mayRetry("create_room"), false);
    const room = env("CHAT_ROOM");
    const heard = nextEvent(bob, "message", ({ message }) => message.text === "from node");
    const sent = await alice.sendMessage(room, "from node");
    const { message, source } = await heard;
    assert.deepEqual(message, sent);
    assert.equal(source, "live");
    // Refused with the protocol's error code.
    await assert.rejects(alice.selectRoom("0".repeat(32)),
      (error) => error instanceof ChatError && error.code === "invalid_room_id");
    const history = await bob.selectRoom(room);
    assert.equal(history.at(-1).id, sent.id);
  } finally {
    alice.stop();
    bob.stop();
  }
});

test("an edit, a reaction and a deletion reach the other client as messagechange, and each client keeps a cursor", { skip: !REAL_STACK && "no stack: run through tests/e2e/test_js_client.py" }, async () => {
  const alice = await started(env("CHAT_WS_URL_A"), env("CHAT_TOKEN_A"));
  const bob = await started(env("CHAT_WS_URL_B"), env("CHAT_TOKEN_B"));
  try {
    const room = env("CHAT_ROOM");
    assert.equal(typeof alice.cursor, "string");  // taken from now, before anything else
    const sent = await alice.sendMessage(room, "to be edited");
    assert.deepEqual([sent.edited_at, sent.deleted, sent.reactions], [null, false, []]);
    const before = alice.cursor;

    const heardEdit = nextEvent(bob, "messagechange", ({ message }) => message.id === sent.id && message.text === "edited");
    const edited = await alice.editMessage(sent.id, "edited");
    assert.equal(typeof edited.edited_at, "number");
    const { action, source } = await heardEdit;
    assert.deepEqual([action, source], ["edit_message", "live"]);
    assert.notEqual(alice.cursor, before);  // the edit's reply carried the cursor of its change
    await assert.rejects(bob.editMessage(sent.id, "not yours"), (error) => error.code === "forbidden");

    const heardReaction = nextEvent(alice, "messagechange", ({ action: name }) => name === "add_reaction");
    const reacted = await bob.addReaction(sent.id, "👍");
    assert.deepEqual(reacted.reactions, [{ emoji: "👍", users: [bob.user.username] }]);
    assert.deepEqual((await heardReaction).message.reactions, reacted.reactions);

    const heardDeletion = nextEvent(bob, "messagechange", ({ action: name }) => name === "delete_message");
    const deleted = await alice.deleteMessage(sent.id);
    assert.deepEqual([deleted.deleted, deleted.text, deleted.reactions], [true, "", []]);
    assert.equal((await heardDeletion).message.deleted, true);
    await assert.rejects(alice.editMessage(sent.id, "too late"), (error) => error.code === "message_deleted");
  } finally {
    alice.stop();
    bob.stop();
  }
});

// --- without a server: chat-client.js against FakeSocket (tests/js/fake-socket.mjs) ---------------

// A test's body, given `newClient(options)`: a client on FakeSocket, stopped after the test.
const unit = (body) => async () => {
  FakeSocket.reset();
  const clients = [];
  const newClient = (options = {}) => {
    const client = new ChatClient({ url: "ws://gateway.test/ws", getToken: async () => "token", WebSocket: FakeSocket,
      backoff: { initial: 5, max: 20 }, heartbeatInterval: 60_000, ...options });
    clients.push(client);
    return client;
  };
  try {
    await body(newClient);
  } finally {
    for (const client of clients) client.stop();
  }
};

/** A gateway that authenticates anyone, answers `sync` with `feed(frame)` (a reply's other keys;
 * by default a cursor "c0" from now and no events), list_rooms with no room, and the other
 * actions with `handlers[action](socket, frame)`. */
const gateway = (handlers = {}, feed = () => ({ events: [], cursor: "c0", has_more: false })) => (socket, frame) => {
  if (frame.action === "authenticate") socket.reply(signedIn(frame));
  else if (handlers[frame.action]) handlers[frame.action](socket, frame);
  else if (frame.action === "sync") socket.reply(ok(frame, feed(frame)));
  else if (frame.action === "list_rooms") socket.reply(ok(frame, { rooms: [] }));
};
const actionsSent = (socket) => socket.sent.map((frame) => frame.action);
const syncsSent = () => FakeSocket.sockets.map((socket) => socket.sent.filter((f) => f.action === "sync")
  .map(({ since, limit, after }) => ({ since, limit, after })));
// What a client emits, in order, as [type, …] rows.
const record = (client) => {
  const seen = [];
  client.addEventListener("message", (e) => seen.push(["message", e.detail.message.id, e.detail.source]));
  client.addEventListener("messagechange", (e) => seen.push(["change", e.detail.action, e.detail.message.id,
    e.detail.message.text, e.detail.source]));
  client.addEventListener("room", (e) => seen.push(["room", e.detail.action, e.detail.room.id]));
  client.addEventListener("leave", (e) => seen.push(["leave", e.detail.room, e.detail.user.username]));
  client.addEventListener("read", (e) => seen.push(["read", e.detail.room, e.detail.lastReadId]));
  client.addEventListener("expired", () => seen.push(["expired"]));
  client.addEventListener("ready", (e) => seen.push(["ready", e.detail.reconnected, e.detail.resynced]));
  return seen;
};

test("the first authentication takes a cursor from now before any other request is sent", unit(async (newClient) => {
  let answer;
  FakeSocket.server = gateway({ sync: (socket, frame) => { answer = () => socket.reply(ok(frame, { events: [], cursor: "c-start", has_more: false })); } });
  const client = newClient();
  const seen = record(client);
  client.start();
  const rooms = client.listRooms();  // asked for before the client is ready: it waits for the cursor
  await nextEvent(client, "state", ({ state }) => state === "connected");
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(actionsSent(FakeSocket.sockets[0]), ["authenticate", "sync"]);
  assert.equal(client.cursor, null);
  answer();
  await nextEvent(client, "ready");
  assert.deepEqual(await rooms, []);
  assert.equal(client.cursor, "c-start");
  assert.deepEqual(actionsSent(FakeSocket.sockets[0]), ["authenticate", "sync", "list_rooms"]);
  assert.deepEqual(syncsSent(), [[{ since: "", limit: 200, after: undefined }]]);
  assert.deepEqual(seen, [["ready", false, false]]);
}));

test("the cursor of every live reply processed is kept; a reply without one keeps the last", unit(async (newClient) => {
  FakeSocket.server = gateway({
    edit_message: (socket, frame) => socket.reply(ok(frame, { room: "r1", message: msg(3, { user: "alice", text: frame.text, edited_at: 2e9 }), cursor: "c-edit" })),
    who_is_online: (socket, frame) => socket.reply(ok(frame, { room: "r1", online: [] })),
  });
  const client = newClient();
  client.start();
  await nextEvent(client, "ready");
  const socket = FakeSocket.sockets[0];
  socket.reply(live(msg(2), "c-2"));
  assert.equal(client.cursor, "c-2");
  const edited = await client.editMessage(3, "fixed");
  assert.equal(edited.text, "fixed");
  assert.equal(client.cursor, "c-edit");
  await client.whoIsOnline("r1");
  socket.reply({ uuid: "theirs", action: "typing", status: "success", room: "r1", user: { username: "bob" } });
  socket.reply({ uuid: "x", action: "new_message", status: "error", error_code: "empty_text", error_message: "", cursor: "c-bad" });
  assert.equal(client.cursor, "c-edit");
}));

test("the four lifecycle actions send their frames and resolve with the message", unit(async (newClient) => {
  const stored = msg(5, { user: "alice" });
  FakeSocket.server = gateway(Object.fromEntries(["edit_message", "delete_message", "add_reaction", "remove_reaction"]
    .map((action) => [action, (socket, frame) => socket.reply(ok(frame, { room: "r1", message: { ...stored, text: action }, cursor: action }))])));
  const client = newClient();
  client.start();
  await nextEvent(client, "ready");
  const results = [
    await client.editMessage(5, "new text", { uuid: "u-edit" }),
    await client.deleteMessage(5, { uuid: "u-delete" }),
    await client.addReaction(5, "👍", { uuid: "u-add" }),
    await client.removeReaction(5, "👍"),
  ];
  assert.deepEqual(results.map((message) => message.text), ["edit_message", "delete_message", "add_reaction", "remove_reaction"]);
  const frames = FakeSocket.sockets[0].sent.slice(2).map(({ uuid, ...frame }) => [uuid.startsWith("u-") ? uuid : "", frame]);
  assert.deepEqual(frames, [
    ["u-edit", { action: "edit_message", message: 5, text: "new text" }],
    ["u-delete", { action: "delete_message", message: 5 }],
    ["u-add", { action: "add_reaction", message: 5, emoji: "👍" }],
    ["", { action: "remove_reaction", message: 5, emoji: "👍" }],
  ]);
  for (const action of ["edit_message", "delete_message", "add_reaction", "remove_reaction", "sync"]) {
    assert.equal(client.mayRetry(action), true, action);
  }
}));

test("changes of a known message are emitted as messagechange, each new state once, an older one not", unit(async (newClient) => {
  FakeSocket.server = gateway();
  const client = newClient();
  const seen = record(client);
  const uuids = [];
  client.addEventListener("messagechange", (e) => uuids.push(e.detail.uuid));
  client.start();
  await nextEvent(client, "ready");
  const socket = FakeSocket.sockets[0];
  const change = (action, message, uuid = "theirs") => socket.reply({ uuid, action, status: "success", room: "r1", message });
  change("new_message", msg(7, { text: "first" }));
  change("new_message", msg(7, { text: "first" }));  // a retry's copy
  change("edit_message", msg(7, { text: "second", edited_at: 100 }), "mine");
  change("edit_message", msg(7, { text: "second", edited_at: 100 }));  // the same state again
  change("add_reaction", msg(7, { text: "second", edited_at: 100, reactions: [{ emoji: "🎉", users: ["carol"] }] }));
  change("edit_message", msg(7, { text: "stale", edited_at: 50 }));  // older than what is shown
  change("remove_reaction", msg(7, { text: "second", edited_at: 100 }));
  change("delete_message", msg(7, { text: "", deleted: true }));
  change("add_reaction", msg(7, { text: "second", edited_at: 100, reactions: [{ emoji: "👍", users: ["bob"] }] }));  // after the deletion: older
  change("edit_message", msg(9, { text: "never seen before", edited_at: 100 }));  // loaded by select_room, say
  assert.deepEqual(seen, [
    ["ready", false, false],
    ["message", 7, "live"],
    ["change", "edit_message", 7, "second", "live"],
    ["change", "add_reaction", 7, "second", "live"],
    ["change", "remove_reaction", 7, "second", "live"],
    ["change", "delete_message", 7, "", "live"],
    ["change", "edit_message", 9, "never seen before", "live"],
  ]);
  assert.deepEqual(uuids, ["mine", "theirs", "theirs", "theirs", "theirs"]);
}));

test("after a reconnect the catch-up syncs from the cursor, page by page, each event emitted like its live reply", unit(async (newClient) => {
  const room = { id: "r2", name: "New", is_direct: false, members: [], last_message: null, unread_count: 0 };
  const pages = {
    "c-live": { events: [
      { action: "new_message", room: "r1", message: msg(11), cursor: "e1" },
      { action: "edit_message", room: "r1", message: msg(10, { text: "edited", edited_at: 5 }), cursor: "e2" },
      { action: "create_room", room, cursor: "e3" },
    ], cursor: "e3", has_more: true },
    e3: { events: [
      { action: "add_reaction", room: "r1", message: msg(11, { reactions: [{ emoji: "👍", users: ["bob"] }] }), cursor: "e4" },
      { action: "delete_message", room: "r1", message: msg(10, { text: "", deleted: true }), cursor: "e5" },
      { action: "leave_room", room: "r3", user: { username: "bob" }, cursor: "e6" },
      { action: "mark_read", room: "r1", message: 11, last_read_id: 11, unread_count: 0, cursor: "e7" },
    ], cursor: "e7", has_more: false },
  };
  FakeSocket.server = gateway({}, (frame) => (frame.since === "" ? { events: [], cursor: "c0", has_more: false } : pages[frame.since]));
  const client = newClient();
  const seen = record(client);
  client.start();
  await nextEvent(client, "ready");
  FakeSocket.sockets[0].reply(live(msg(10), "c-live"));
  FakeSocket.sockets[0].close(1006, "");
  await nextEvent(client, "ready");
  assert.deepEqual(syncsSent().map((syncs) => syncs.map((s) => s.since)), [[""], ["c-live", "e3"]]);
  assert.equal(client.cursor, "e7");
  assert.deepEqual(seen, [
    ["ready", false, false],
    ["message", 10, "live"],
    ["message", 11, "sync"],
    ["change", "edit_message", 10, "edited", "sync"],
    ["room", "create_room", "r2"],
    ["change", "add_reaction", 11, "m11", "sync"],
    ["change", "delete_message", 10, "", "sync"],
    ["leave", "r3", "bob"],
    ["read", "r1", 11],
    ["ready", true, false],
  ]);
}));

test("while a catch-up runs, live replies are shown but their cursors are not taken; a loss mid-way resumes from the last event", unit(async (newClient) => {
  let catchUps = 0;
  FakeSocket.server = gateway({ sync: (socket, frame) => {
    if (frame.since === "") { socket.reply(ok(frame, { events: [], cursor: "c0", has_more: false })); return; }
    catchUps += 1;
    if (catchUps === 1) {
      socket.reply(ok(frame, { events: [{ action: "new_message", room: "r1", message: msg(21), cursor: "e21" }], cursor: "e21", has_more: true }));
    } else if (catchUps === 2) {
      // A live reply during the catch-up: after the gap, so its cursor is not where to resume.
      socket.reply(live(msg(30), "c-30"));
      socket.close(1006, "");  // lost in the middle of the catch-up
    } else {
      socket.reply(ok(frame, { events: [{ action: "new_message", room: "r1", message: msg(22), cursor: "e22" },
        { action: "new_message", room: "r1", message: msg(30), cursor: "e30" }], cursor: "e30", has_more: false }));
    }
  } });
  const client = newClient();
  const seen = record(client);
  client.start();
  await nextEvent(client, "ready");
  FakeSocket.sockets[0].reply(live(msg(20), "c-20"));
  FakeSocket.sockets[0].close(1006, "");
  await nextEvent(client, "ready");
  assert.deepEqual(syncsSent().map((syncs) => syncs.map((s) => s.since)), [[""], ["c-20", "e21"], ["e21"]]);
  assert.equal(client.cursor, "e30");
  assert.deepEqual(seen.filter(([type]) => type === "message").map(([, id]) => id), [20, 21, 30, 22]);
  // Live again: cursors are taken once more.
  FakeSocket.sockets[2].reply(live(msg(31), "c-31"));
  assert.equal(client.cursor, "c-31");
}));

test("a resync stops taking live cursors until its catch-up from the cursor is done", unit(async (newClient) => {
  FakeSocket.server = gateway({}, (frame) => (frame.since === "" ? { events: [], cursor: "c0", has_more: false }
    : { events: [{ action: "edit_message", room: "r1", message: msg(4, { text: "missed", edited_at: 9 }), cursor: "e-missed" }], cursor: "e-end", has_more: false }));
  const client = newClient({ resyncJitter: 10 });
  const seen = record(client);
  client.start();
  await nextEvent(client, "ready");
  const socket = FakeSocket.sockets[0];
  socket.reply(live(msg(4), "c-4"));
  const caughtUp = nextEvent(client, "ready");
  socket.reply({ action: "resync", reason: "bus gap" });
  socket.reply(live(msg(5), "c-5"));
  assert.equal(client.cursor, "c-4");
  await caughtUp;
  assert.deepEqual(syncsSent(), [[{ since: "", limit: 200, after: undefined }, { since: "c-4", limit: 200, after: undefined }]]);
  assert.equal(client.cursor, "e-end");
  assert.equal(FakeSocket.sockets.length, 1);
  assert.deepEqual(seen.slice(-2), [["change", "edit_message", 4, "missed", "sync"], ["ready", false, true]]);
}));

test("a cursor the feed no longer keeps: a fresh one from now, then expired, then ready", unit(async (newClient) => {
  FakeSocket.server = gateway({ sync: (socket, frame) => {
    if (frame.since === "old") socket.reply(fail(frame, "cursor_expired"));
    else socket.reply(ok(frame, { events: [], cursor: frame.since === "" ? `fresh-${FakeSocket.sockets.length}` : frame.since, has_more: false }));
  } });
  const client = newClient();
  const seen = record(client);
  client.start();
  await nextEvent(client, "ready");
  FakeSocket.sockets[0].reply({ uuid: "theirs", action: "delete_message", status: "success", room: "r1", message: msg(4, { text: "", deleted: true }), cursor: "old" });
  FakeSocket.sockets[0].close(1006, "");
  await nextEvent(client, "ready");
  assert.deepEqual(syncsSent().map((syncs) => syncs.map((s) => s.since)), [[""], ["old", ""]]);
  assert.equal(client.cursor, "fresh-2");
  assert.equal(client.state, "connected");
  assert.deepEqual(seen.slice(-2), [["expired"], ["ready", true, false]]);
}));

test("an edit whose reply was lost is sent again with its uuid on the next connection", unit(async (newClient) => {
  let edits = 0;
  FakeSocket.server = gateway({ edit_message: (socket, frame) => {
    edits += 1;
    if (edits === 1) socket.close(1006, "");
    else socket.reply(ok(frame, { room: "r1", message: msg(6, { user: "alice", text: frame.text, edited_at: 7 }), cursor: "c-edit" }));
  } });
  const client = newClient();
  client.start();
  await nextEvent(client, "ready");
  const edited = await client.editMessage(6, "again", { uuid: "u-6" });
  assert.equal(edited.text, "again");
  const uuids = FakeSocket.sockets.map((socket) => socket.sent.filter((f) => f.action === "edit_message").map((f) => f.uuid));
  assert.deepEqual(uuids, [["u-6"], ["u-6"]]);
}));
