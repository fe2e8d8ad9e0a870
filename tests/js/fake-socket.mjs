// A WebSocket look-alike for chat-client.js's tests, in Node and in Chromium
// (tests/e2e/test_chat_page_client.py imports it into its page): each test sets
// `FakeSocket.server(socket, frame)` to answer what the client sends, and may set
// `FakeSocket.feed(socket, frame)` to answer its `sync` frames apart; every socket made is in
// `FakeSocket.sockets`, with the frames it was sent.

export class FakeSocket {
  static sockets = [];
  static server = () => {};
  static feed = null;

  /** Forget the sockets, the server and the feed of the last test. */
  static reset(server = () => {}) {
    FakeSocket.sockets = [];
    FakeSocket.server = server;
    FakeSocket.feed = null;
  }

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.sockets.push(this);
    setTimeout(() => { this.readyState = 1; this.onopen?.({}); }, 0);
  }

  send(data) {
    const frame = JSON.parse(data);
    this.sent.push(frame);
    const answer = frame.action === "sync" && FakeSocket.feed ? FakeSocket.feed : FakeSocket.server;
    setTimeout(() => answer(this, frame), 0);
  }

  reply(frame) {
    if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(frame) });
  }

  close(code = 1000, reason = "") {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }
}

// What the workers' registry declares retryable (the server's catalogue, version 1.1).
export const CATALOGUE = Object.fromEntries([
  "list_rooms", "select_room", "load_history", "new_message", "direct_message", "mark_read", "add_members",
  "who_is_online", "sync", "edit_message", "delete_message", "add_reaction", "remove_reaction",
].map((name) => [name, { retry: true }]).concat([["create_room", { retry: false }], ["leave_room", { retry: false }]]));

export const ok = (frame, extra = {}) => ({ uuid: frame.uuid, action: frame.action, status: "success", ...extra });
export const fail = (frame, code) => ({ uuid: frame.uuid, action: frame.action, status: "error", error_code: code,
  error_message: code });
export const signedIn = (frame, actions = CATALOGUE) => ok(frame, { user: { username: "alice" }, actions });

/** A version 1.1 message object. */
export const msg = (id, { text = `m${id}`, room = "r1", user = "bob", ...state } = {}) => ({
  id, user: { username: user }, room, timestamp: 1e9 + id, text, edited_at: null, deleted: false, reactions: [], ...state,
});

/** A live new_message reply of someone else's message `m`, with its cursor. */
export const live = (m, cursor = `c${m.id}`) => ({
  uuid: "theirs", action: "new_message", status: "success", room: m.room, message: m, cursor,
});

/** The promise of the next event `type` of `target` whose detail passes `predicate`. */
export const nextEvent = (target, type, predicate = () => true) => new Promise((resolve) => {
  const listener = (event) => {
    if (!predicate(event.detail)) return;
    target.removeEventListener(type, listener);
    resolve(event.detail);
  };
  target.addEventListener(type, listener);
});
