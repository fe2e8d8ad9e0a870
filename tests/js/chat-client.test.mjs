// chat-client.js under Node's test runner, against the real gateway and workers that
// tests/e2e/test_js_client.py starts; it passes the addresses and two users' tokens in the
// environment. Run by hand: CHAT_WS_URL_A=… CHAT_WS_URL_B=… CHAT_TOKEN_A=… CHAT_TOKEN_B=…
// CHAT_ROOM=… CHAT_USER_A=… node --test tests/js/ (Node 20: with --experimental-websocket).
import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatClient, ChatError } from "../../chat/static/chat/chat-client.js";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through tests/e2e/test_js_client.py`);
  return value;
};

const nextEvent = (client, type, predicate = () => true) => new Promise((resolve) => {
  const listener = (event) => {
    if (!predicate(event.detail)) return;
    client.removeEventListener(type, listener);
    resolve(event.detail);
  };
  client.addEventListener(type, listener);
});

const started = async (url, token) => {
  const client = new ChatClient({ url, getToken: async () => token });
  const ready = nextEvent(client, "ready");
  client.start();
  await ready;
  return client;
};

test("two clients chat through the gateway, and the catalogue says what is resent", async () => {
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
