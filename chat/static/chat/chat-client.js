// chat-client.js: the chat protocol (version 1.1) over one WebSocket, for any page. No DOM, no
// dependency: an EventTarget that connects, authenticates, reconnects with backoff and jitter,
// keeps the change feed's cursor and `sync`s from it what it missed (after a reconnect, or when
// the gateway sends `resync`), and retries what is safe to retry with the same uuid: the server
// says which actions those are, in the `actions` catalogue of its authenticate reply, so a new
// action needs no change here. The server's own events (`chat.publish`) reach `on(name, handler)`.
// The API is documented in docs/chat-page.md.

/** The WebSocket subprotocol asked for: version 1 of the protocol (docs/protocol.md, "Versions and compatibility"). */
export const SUBPROTOCOL = "chat.v1";

/** Error codes after which a retryable request is sent again (same uuid) after a pause. */
export const RETRY_ERROR_CODES = new Set(["timeout", "rate_limited"]);

const DEFAULTS = {
  backoff: { initial: 500, max: 10000, factor: 2 },
  // Requests waiting to be sent or answered; one more is refused (`queue_full`).
  maxQueued: 200,
  // Requests sent and not yet answered on one connection (the gateway allows MAX_IN_FLIGHT, 32).
  maxInFlight: 16,
  // Times a request is sent again after a `timeout` or `rate_limited` error before it fails.
  maxRetries: 5,
  // A `ping` this often while connected; no answer within `heartbeatTimeout`: the connection is
  // taken for dead and replaced (a half-open TCP connection closes no socket by itself).
  heartbeatInterval: 25000,
  heartbeatTimeout: 10000,
  // Messages remembered (id and state) to emit each message once (a retry's echo, sync after a
  // live copy) and each change of one once, the later state winning.
  seenIdsLimit: 5000,
  syncPageSize: 200,
  // After a `resync` frame the catch-up waits a random 0..resyncJitter ms: the gateway tells all
  // its clients at once, and their syncs, spread over a few seconds, do not all hit the workers
  // and the database in the same instant, just after Redis came back.
  resyncJitter: 3000,
};

/** A refused request: `code` is the protocol's error_code, or one of the client's own
 * (`connection_lost`, `queue_full`, `stopped`, `bad_reply`). */
export class ChatError extends Error {
  constructor(code, message, reply = null) {
    super(message || code);
    this.name = "ChatError";
    this.code = code;
    this.reply = reply;
  }
}

/** The pause before reconnect attempt `attempt` (0 for the first): exponential, capped, and
 * "equal jitter" (between half and all of it) so that clients dropped together come back spread. */
export function backoffDelay(attempt, { initial, max, factor } = DEFAULTS.backoff, random = Math.random) {
  const ceiling = Math.min(max, initial * factor ** attempt);
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** A random uuid (version 4). crypto.randomUUID exists only in secure contexts (HTTPS or
 * localhost); a page served over plain HTTP elsewhere still has getRandomValues. */
export function newUuid() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Every message object a reply carries (new_message, select_room, sync, list_rooms…). */
export function messagesIn(reply) {
  const found = [];
  if (reply.message && typeof reply.message === "object") found.push(reply.message);
  for (const key of ["room_messages", "messages"]) {
    if (Array.isArray(reply[key])) found.push(...reply[key]);
  }
  const rooms = Array.isArray(reply.rooms) ? reply.rooms : [];
  if (reply.room && typeof reply.room === "object") rooms.push(reply.room);
  for (const room of rooms) if (room.last_message) found.push(room.last_message);
  if (Array.isArray(reply.events)) {
    for (const event of reply.events) if (event && typeof event === "object") found.push(...messagesIn(event));
  }
  return found.filter((message) => Number.isInteger(message?.id));
}

/** Actions whose reply carries a new state of a message that exists already. */
export const CHANGE_ACTIONS = new Set(["edit_message", "delete_message", "add_reaction", "remove_reaction"]);

/** What a message's state is made of, as one string: two states are the same when these are. */
function stateKey(message) {
  return JSON.stringify([message.text, message.edited_at ?? null, message.deleted === true, message.reactions ?? []]);
}

/** Whether two states of one message show the same. */
export function sameState(a, b) {
  return stateKey(a) === stateKey(b);
}

/** Whether `incoming` is an older state of the message than `known` (both of one id). Cursors
 * are opaque and messages carry no version, so what a state tells is used: a deletion is final,
 * and a later edit time is a later edit. Reactions alone tell nothing: the later arrival wins. */
export function isOlderState(incoming, known) {
  if (known.deleted === true) return incoming.deleted !== true;
  if (incoming.deleted === true) return false;
  const knownEdit = known.edited_at ?? null;
  const incomingEdit = incoming.edited_at ?? null;
  if (knownEdit === null) return false;
  return incomingEdit === null || incomingEdit < knownEdit;
}

export class ChatClient extends EventTarget {
  #options;
  #Socket;
  #socket = null;
  #connection = 0;          // bumped for every socket: late events of an old one are ignored
  #state = "idle";
  #user = null;
  #attempt = 0;
  #reconnectTimer = null;
  #heartbeatTimer = null;
  #pending = new Map();     // uuid -> request, in the order they were made
  #inFlight = 0;
  #lastSeenId = 0;
  // The change feed's cursor of the last change processed (opaque: never parsed), or null before
  // the first `sync` with `"since": ""` gave one. A catch-up starts from it.
  #cursor = null;
  // A catch-up is due or running (a connection was lost, the gateway sent `resync`): changes
  // may be missing before the ones that come live, so their cursors are not taken until it ends.
  #behind = false;
  // The uuid of the one request that goes before any other (the first `sync`, for a cursor that
  // precedes whatever the page then loads), or null.
  #gate = null;
  #seen = new Map();        // message id -> its state key, for the last seenIdsLimit messages
  #everConnected = false;
  #lostSignal = null;       // resolves when the current connection is lost
  #markLost = null;
  #heartbeatUuid = null;
  #heartbeatDeadline = null;
  #resyncTimer = null;      // a catch-up asked for by a `resync` frame, waiting for its jitter
  #catchingUp = false;      // a sync catch-up is running on this connection
  #resyncAgain = null;      // the reason of a `resync` that came during it: another catch-up follows
  // Actions safe to send again with the same uuid: `ping` (the gateway's own), and those the
  // authenticate reply's catalogue marks `retry`. Kept across reconnects.
  #retryable = new Set(["ping"]);

  /**
   * @param {object} options
   * @param {string} options.url the gateway's WebSocket URL (ws://host:port/ws)
   * @param {() => Promise<{ticket: string} | {token: string}>} [options.credentials] what to
   *   authenticate with, called before every connection: a short-lived ticket (a page, through
   *   its session) or a token
   * @param {() => Promise<string>} [options.getToken] the user's token, called before every
   *   connection; the same as `credentials: async () => ({ token: await getToken() })`
   */
  constructor(options) {
    super();
    if (!options?.url || (typeof options.credentials !== "function" && typeof options.getToken !== "function")) {
      throw new TypeError("ChatClient needs a url and a credentials (or getToken) function");
    }
    this.#options = {
      ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...options.backoff },
    };
    this.#Socket = options.WebSocket || globalThis.WebSocket;
  }

  /** "idle", "connecting" (first time), "connected", "reconnecting" or "stopped". */
  get state() { return this.#state; }
  /** `{username}` once authenticated, else null. */
  get user() { return this.#user; }
  /** The newest message id this client has seen. */
  get lastSeenId() { return this.#lastSeenId; }
  /** The change feed's cursor of the last change processed (opaque), where a catch-up starts;
   * null until the first authentication's `sync` gave one. */
  get cursor() { return this.#cursor; }
  /** Requests made and not yet settled. */
  get pendingCount() { return this.#pending.size; }
  /** Whether `action` may be sent again with the same uuid (after `timeout`, `rate_limited` or a
   * lost connection), as the server's catalogue says; false before the first authentication. */
  mayRetry(action) { return this.#retryable.has(action); }

  /** Connect (and stay connected until stop()). */
  start() {
    if (this.#state !== "idle" && this.#state !== "stopped") return;
    this.#setState("connecting");
    this.#open();
  }

  /** Close for good: pending requests fail with `stopped`. */
  stop() {
    this.#setState("stopped");
    clearTimeout(this.#reconnectTimer);
    this.#stopHeartbeat();
    const socket = this.#socket;
    this.#socket = null;
    this.#connection += 1;
    if (socket) socket.close(1000, "client stopped");
    for (const request of this.#pending.values()) request.reject(new ChatError("stopped", "The client was stopped"));
    this.#pending.clear();
    this.#inFlight = 0;
  }

  /**
   * Send one frame; resolves with its success reply, rejects with a ChatError. Made while the
   * connection is down, it waits and is sent once authenticated again.
   * @param {string} action
   * @param {object} [fields] the frame's other keys
   * @param {{uuid?: string, resend?: boolean}} [options] a uuid of the caller's (to show a message
   *   before it is sent); `resend`: send it again on the next connection if this one is lost
   *   before the reply (default: for the actions the server's catalogue marks `retry`)
   */
  request(action, fields = {}, { uuid = newUuid(), resend = null } = {}) {
    return this.#enqueue(action, fields, { uuid, resend, bounded: true });
  }

  /** A request of the caller's (`bounded`: refused past maxQueued), or of the client's own (its
   * catch-up's one `sync` at a time, which a queue full of the caller's requests must not stop). */
  #enqueue(action, fields, { uuid, resend, bounded }) {
    if (this.#state === "stopped") return Promise.reject(new ChatError("stopped", "The client was stopped"));
    if (bounded && this.#pending.size >= this.#options.maxQueued) {
      return Promise.reject(new ChatError("queue_full", "Too many requests waiting"));
    }
    if (this.#pending.has(uuid)) return Promise.reject(new ChatError("duplicate_uuid", `uuid ${uuid} is in use`));
    let request;
    const promise = new Promise((resolve, reject) => {
      request = { uuid, action, fields, resend, resolve, reject, sentOn: null, retries: 0, retryTimer: null };
    });
    request.settled = promise.then(() => {}, () => {});
    this.#pending.set(uuid, request);
    this.#pump();
    return promise;
  }

  // --- the protocol's actions -------------------------------------------------------------

  /** The user's rooms, newest activity first. */
  async listRooms() { return (await this.request("list_rooms")).rooms; }
  /** The room's last 20 messages, oldest first. */
  async selectRoom(room) { return (await this.request("select_room", { room })).room_messages; }
  /** Up to `limit` messages older than `before`: `{messages, hasMore}`. */
  async loadHistory(room, { before, limit } = {}) {
    const fields = { room };
    if (before !== undefined) fields.before = before;
    if (limit !== undefined) fields.limit = limit;
    const reply = await this.request("load_history", fields);
    return { messages: reply.room_messages, hasMore: reply.has_more };
  }
  /** Post a message; resolves with the stored message. Pass your own `uuid` to match it later. */
  async sendMessage(room, text, { uuid } = {}) {
    return (await this.request("new_message", { room, text }, { uuid })).message;
  }
  /** A message to one user, in their direct room (made on first use): `{room, message}`. */
  async directMessage(to, text, { uuid } = {}) {
    const reply = await this.request("direct_message", { to, text }, { uuid });
    return { room: reply.room, message: reply.message };
  }
  /** A room of the user and `members` (usernames); resolves with the room object. */
  async createRoom(name, members = []) { return (await this.request("create_room", { name, members })).room; }
  async addMembers(room, members) { return (await this.request("add_members", { room, members })).room; }
  async leaveRoom(room) { await this.request("leave_room", { room }); }
  /** Read up to `messageId`: `{last_read_id, unread_count}`. */
  async markRead(room, messageId) {
    const reply = await this.request("mark_read", { room, message: messageId });
    return { lastReadId: reply.last_read_id, unreadCount: reply.unread_count };
  }
  async whoIsOnline(room) { return (await this.request("who_is_online", { room })).online; }
  /** Replace the text of one's own message; resolves with the message as stored. */
  async editMessage(messageId, text, { uuid } = {}) {
    return (await this.request("edit_message", { message: messageId, text }, { uuid })).message;
  }
  /** Delete one's own message; resolves with the deleted message (a tombstone). */
  async deleteMessage(messageId, { uuid } = {}) {
    return (await this.request("delete_message", { message: messageId }, { uuid })).message;
  }
  /** Add the user's reaction `emoji`; resolves with the message and all its reactions. */
  async addReaction(messageId, emoji, { uuid } = {}) {
    return (await this.request("add_reaction", { message: messageId, emoji }, { uuid })).message;
  }
  /** Remove the user's reaction `emoji`; resolves with the message and all its reactions. */
  async removeReaction(messageId, emoji, { uuid } = {}) {
    return (await this.request("remove_reaction", { message: messageId, emoji }, { uuid })).message;
  }
  /** `{serverTime, connections}`, answered by the gateway itself. */
  async ping() {
    const reply = await this.request("ping");
    return { serverTime: reply.server_time, connections: reply.connections };
  }

  /**
   * Call `handler(data, name)` for each server event `name` (`{"action": "event"}` frames, sent by
   * the server's `chat.publish`); the same comes as a CustomEvent `event:NAME`, detail
   * `{event, data}`. Best effort: events sent while disconnected are not caught up on.
   * @returns {() => void} removes the handler
   */
  on(name, handler) {
    if (typeof name !== "string" || !name || typeof handler !== "function") {
      throw new TypeError("on() needs an event name and a handler function");
    }
    const listener = (event) => handler(event.detail.data, event.detail.event);
    this.addEventListener(`event:${name}`, listener);
    return () => this.removeEventListener(`event:${name}`, listener);
  }

  /** Tell the other members that the user is typing. Fire and forget: a success has no reply
   * (the other members get it); not sent while disconnected. Returns whether it was sent. */
  typing(room) {
    if (this.#state !== "connected") return false;
    return this.#send({ uuid: newUuid(), action: "typing", room });
  }

  // --- connection ---------------------------------------------------------------------------

  #setState(state, detail = {}) {
    if (this.#state === state && !Object.keys(detail).length) return;
    this.#state = state;
    this.#emit("state", { state, ...detail });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  async #open() {
    const connection = ++this.#connection;
    let credential;
    try {
      credential = await this.#credential();
    } catch (error) {
      if (connection !== this.#connection) return;
      this.#emit("error", { code: "token_unavailable", message: String(error?.message || error) });
      this.#scheduleReconnect();
      return;
    }
    if (connection !== this.#connection) return;
    this.#lostSignal = new Promise((resolve) => { this.#markLost = resolve; });
    this.#gate = null;
    let socket;
    try {
      socket = new this.#Socket(this.#options.url, SUBPROTOCOL);
    } catch (error) {
      this.#emit("error", { code: "connect_failed", message: String(error?.message || error) });
      this.#scheduleReconnect();
      return;
    }
    this.#socket = socket;
    const authUuid = newUuid();
    socket.onopen = () => {
      if (connection === this.#connection) this.#send({ uuid: authUuid, action: "authenticate", ...credential });
    };
    socket.onmessage = (event) => {
      if (connection === this.#connection) this.#receive(event.data, authUuid, connection);
    };
    socket.onclose = (event) => {
      if (connection === this.#connection) this.#lost(event.code, event.reason);
    };
    socket.onerror = () => {};  // a close event always follows
  }

  /** `{ticket}` or `{token}`, fresh for this connection (a ticket lives a minute). */
  async #credential() {
    if (typeof this.#options.credentials !== "function") return { token: await this.#options.getToken() };
    const { ticket, token } = (await this.#options.credentials()) || {};
    if (typeof ticket === "string") return { ticket };
    if (typeof token === "string") return { token };
    throw new Error("credentials() gave neither a ticket nor a token");
  }

  #send(frame) {
    if (!this.#socket || this.#socket.readyState !== 1) return false;
    try {
      this.#socket.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /** The connection is gone (closed, or taken for dead): settle or keep what was pending, and
   * come back after a pause. */
  #lost(code = 1006, reason = "") {
    const socket = this.#socket;
    this.#socket = null;
    this.#connection += 1;
    this.#stopHeartbeat();
    // A catch-up asked for by `resync` is now the next connection's: the cursor is kept.
    clearTimeout(this.#resyncTimer);
    this.#resyncTimer = null;
    this.#catchingUp = false;
    this.#resyncAgain = null;
    this.#gate = null;
    this.#markLost?.();
    this.#markLost = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      if (socket.readyState < 2) socket.close(4000, "replaced");
    }
    // What the page has shown is complete up to the cursor; a sync after the next authentication
    // starts there (a catch-up that did not finish left it where it got to). Without a cursor
    // the next connection takes one first, before anything else.
    if (this.#cursor !== null) this.#behind = true;
    this.#user = null;
    this.#inFlight = 0;
    for (const request of [...this.#pending.values()]) {
      const sent = request.sentOn !== null;
      request.sentOn = null;
      if (sent && !(request.resend ?? this.mayRetry(request.action))) {
        // Its outcome is unknown and sending it again could do it twice (a second room).
        this.#settle(request, null, new ChatError("connection_lost", "The connection was lost"));
      }
    }
    if (this.#state === "stopped") return;
    this.#emit("disconnected", { code, reason });
    this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    clearTimeout(this.#reconnectTimer);
    const delay = backoffDelay(this.#attempt, this.#options.backoff, this.#options.random);
    this.#attempt += 1;
    this.#setState("reconnecting", { attempt: this.#attempt, retryIn: delay });
    this.#reconnectTimer = setTimeout(() => {
      if (this.#state !== "stopped") this.#open();
    }, delay);
  }

  /** Reconnect now (after the browser says it is back online, say) instead of after the pause. */
  reconnectNow() {
    if (this.#state !== "reconnecting" || this.#socket) return;
    clearTimeout(this.#reconnectTimer);
    this.#open();
  }

  #receive(data, authUuid, connection) {
    let reply;
    try {
      reply = JSON.parse(data);
    } catch {
      return;  // the gateway sends JSON only
    }
    if (!reply || typeof reply !== "object") return;
    if (reply.uuid === authUuid && reply.action === "authenticate") {
      this.#authenticated(reply, connection);
      return;
    }
    if (reply.action === "resync" && reply.uuid == null) {  // the gateway's own: it answers no request
      this.#resync(reply, connection);
      return;
    }
    if (reply.action === "event" && reply.uuid == null) {  // the server's own (chat.publish): no request
      if (typeof reply.event === "string" && reply.event) {
        this.#emit(`event:${reply.event}`, { event: reply.event, data: reply.data ?? {} });
      }
      return;
    }
    if (reply.uuid === this.#heartbeatUuid && reply.action === "ping") {
      clearTimeout(this.#heartbeatDeadline);
      this.#heartbeatUuid = null;
      return;
    }
    if (reply.status === "success") {
      for (const message of messagesIn(reply)) this.#lastSeenId = Math.max(this.#lastSeenId, message.id);
      if (reply.action !== "sync") {  // a sync's cursor is the catch-up's to take (#sync)
        this.#broadcast(reply, "live");
        // A change processed: resume after it, unless changes before it may still be missing.
        if (typeof reply.cursor === "string" && !this.#behind) this.#cursor = reply.cursor;
      }
    }
    const request = this.#pending.get(reply.uuid);
    if (request && request.sentOn === connection && request.action === reply.action) {
      this.#inFlight -= 1;
      request.sentOn = null;
      if (reply.status === "success") {
        this.#settle(request, reply, null);
      } else if (this.mayRetry(request.action) && RETRY_ERROR_CODES.has(reply.error_code)
                 && request.retries < this.#options.maxRetries) {
        request.retries += 1;
        const delay = backoffDelay(request.retries, this.#options.backoff, this.#options.random);
        request.retryTimer = setTimeout(() => { request.retryTimer = null; this.#pump(); }, delay);
      } else {
        this.#settle(request, null, new ChatError(reply.error_code || "server_error", reply.error_message, reply));
      }
      this.#pump();
    } else if (reply.status === "error") {
      // An error for a frame this client does not wait on (a typing notice, say).
      this.#emit("error", { code: reply.error_code, message: reply.error_message, reply });
    }
  }

  #settle(request, reply, error) {
    clearTimeout(request.retryTimer);
    this.#pending.delete(request.uuid);
    if (error) request.reject(error);
    else request.resolve(reply);
  }

  async #authenticated(reply, connection) {
    if (reply.status !== "success") {
      this.#emit("error", { code: reply.error_code, message: reply.error_message, reply });
      this.#lost(4000, "authentication failed");
      return;
    }
    const lost = this.#lostSignal;
    this.#user = reply.user;
    if (reply.actions && typeof reply.actions === "object") {
      this.#retryable = new Set(["ping", ...Object.keys(reply.actions).filter((name) => reply.actions[name]?.retry === true)]);
    }
    const reconnected = this.#everConnected;
    this.#everConnected = true;
    this.#setState("connected");
    this.#startHeartbeat(connection);
    if (this.#cursor === null) {
      // No cursor yet (the first connection): take one from now before anything else is sent, so
      // that whatever the page loads next is no older than where a later catch-up starts.
      if (!await this.#catchUp(connection, { gated: true })) return;
    } else if (this.#behind) {
      // Messages retried with their uuid go first, and the sync waits for their replies: a sync
      // that brought a copy of one before its own reply would show it twice for a moment.
      const retried = [...this.#pending.values()]
        .filter((request) => request.action === "new_message" || request.action === "direct_message")
        .map((request) => request.settled);
      this.#pump();
      await Promise.race([Promise.all(retried), lost]);
      if (connection !== this.#connection || !await this.#catchUp(connection)) return;
    } else {
      this.#pump();
    }
    if (connection !== this.#connection) return;
    this.#attempt = 0;  // only now: a connection that fails its catch-up backs off further
    this.#emit("ready", { user: reply.user, reconnected, resynced: false });
  }

  /** Sync from the cursor (from now, without one) on this connection; whether it got to the end.
   * A catch-up starting now covers every `resync` that came before it. `gated`: nothing else is
   * sent until its first page is answered. A cursor the feed no longer keeps (`cursor_expired`)
   * is replaced by one from now, then `expired` tells the page to load everything again. */
  async #catchUp(connection, { gated = false } = {}) {
    clearTimeout(this.#resyncTimer);
    this.#resyncTimer = null;
    this.#catchingUp = true;
    let expired = false;
    try {
      try {
        await this.#sync(connection, gated);
      } catch (error) {
        if (error?.code !== "cursor_expired" || connection !== this.#connection) throw error;
        this.#cursor = null;
        expired = true;
        await this.#sync(connection, false);
      }
    } catch (error) {
      // The cursor is kept: the next connection goes on from there. A catch-up refused on a
      // connection still open (retries used up) is not left half done: reconnect, after a pause.
      if (connection === this.#connection) {
        this.#catchingUp = false;
        this.#emit("error", { code: error?.code, message: error?.message });
        this.#lost(4000, "sync failed");
      }
      return false;
    }
    if (connection !== this.#connection) return false;
    this.#catchingUp = false;
    if (this.#resyncAgain !== null) {
      // A gap during this catch-up may have lost what came after its last page: once more, from
      // the cursor it got to.
      const reason = this.#resyncAgain;
      this.#resyncAgain = null;
      this.#scheduleResync(connection, reason);
    } else {
      this.#behind = false;
    }
    if (expired) this.#emit("expired", {});
    return true;
  }

  /** The gateway lost replies meant for this connection (its Redis subscription was down for a
   * while): catch up with `sync` from the cursor, on this connection, after a random pause
   * (`resyncJitter`). One catch-up at a time; a `resync` while one waits adds nothing. */
  #resync(reply, connection) {
    // Without a cursor the first sync is still to come, and takes one from after the gap.
    if (this.#cursor === null) return;
    // Every change up to the cursor came before the gap (the gateway sends `resync` before
    // anything it routes after it); ones that arrive live meanwhile do not move it.
    this.#behind = true;
    if (this.#catchingUp) this.#resyncAgain = String(reply.reason ?? "");
    else if (this.#resyncTimer === null) this.#scheduleResync(connection, String(reply.reason ?? ""));
  }

  #scheduleResync(connection, reason) {
    const random = this.#options.random || Math.random;
    const delay = Math.round(random() * this.#options.resyncJitter);
    this.#emit("resync", { reason, syncIn: delay });
    this.#resyncTimer = setTimeout(async () => {
      this.#resyncTimer = null;
      if (connection !== this.#connection) return;
      if (await this.#catchUp(connection)) this.#emit("ready", { user: this.#user, reconnected: false, resynced: true });
    }, delay);
  }

  /** Every change after the cursor (none, from "" without one), page by page while `has_more`,
   * each event emitted as the live reply it stands for (source "sync"), the cursor taken after
   * each. `gated`: the first page goes before any other request. */
  async #sync(connection, gated) {
    for (;;) {
      const since = this.#cursor ?? "";
      const uuid = newUuid();
      if (gated) this.#gate = uuid;
      let reply;
      try {
        // Not resent by itself after a loss: the next connection's catch-up starts over from the cursor.
        const pending = this.#enqueue("sync", { since, limit: this.#options.syncPageSize }, { uuid, resend: false, bounded: false });
        this.#pump();
        reply = await pending;
      } finally {
        if (gated && this.#gate === uuid) {
          this.#gate = null;
          this.#pump();
        }
        gated = false;
      }
      if (connection !== this.#connection) throw new ChatError("connection_lost", "The connection was lost");
      const events = Array.isArray(reply.events) ? reply.events : [];
      for (const event of events) {
        if (!event || typeof event !== "object") continue;
        this.#broadcast(event, "sync");
        // Processed: a catch-up cut short by another loss goes on from here.
        if (typeof event.cursor === "string") this.#cursor = event.cursor;
      }
      if (typeof reply.cursor === "string") this.#cursor = reply.cursor;
      else if (this.#cursor === null) throw new ChatError("bad_reply", "sync gave no cursor", reply);
      // A page that moved nothing would be asked for again and again.
      if (!reply.has_more || (this.#cursor === since && !events.length)) return;
    }
  }

  /** Send what waits, up to maxInFlight on this connection (while a gate is up: only it). */
  #pump() {
    if (this.#state !== "connected") return;
    for (const request of this.#pending.values()) {
      if (this.#inFlight >= this.#options.maxInFlight) return;
      if (this.#gate !== null && request.uuid !== this.#gate) continue;
      if (request.sentOn !== null || request.retryTimer !== null) continue;
      if (!this.#send({ ...request.fields, uuid: request.uuid, action: request.action })) return;
      request.sentOn = this.#connection;
      this.#inFlight += 1;
    }
  }

  #startHeartbeat(connection) {
    this.#stopHeartbeat();
    this.#heartbeatTimer = setInterval(() => {
      if (connection !== this.#connection || this.#heartbeatUuid !== null) return;
      this.#heartbeatUuid = newUuid();
      this.#send({ uuid: this.#heartbeatUuid, action: "ping" });
      this.#heartbeatDeadline = setTimeout(() => {
        if (connection === this.#connection) this.#lost(4000, "no answer to ping");
      }, this.#options.heartbeatTimeout);
    }, this.#options.heartbeatInterval);
  }

  #stopHeartbeat() {
    clearInterval(this.#heartbeatTimer);
    clearTimeout(this.#heartbeatDeadline);
    this.#heartbeatTimer = null;
    this.#heartbeatUuid = null;
  }

  // --- what others did ---------------------------------------------------------------------

  #remember(message) {
    this.#seen.delete(message.id);  // re-added last: the latest touched is the last forgotten
    this.#seen.set(message.id, { key: stateKey(message), edited_at: message.edited_at ?? null,
      deleted: message.deleted === true });
    if (this.#seen.size > this.#options.seenIdsLimit) {
      this.#seen.delete(this.#seen.keys().next().value);  // the oldest
    }
  }

  /** A message: `message` the first time its id comes; a later, different state of it (a sync
   * event that carries its latest state) as a `messagechange`. */
  #emitMessage(message, uuid, source, action) {
    if (this.#seen.has(message.id)) {
      this.#emitChange(message, uuid, source, action);
      return;
    }
    this.#remember(message);
    this.#emit("message", { message, uuid, source });
  }

  /** A new state of a message (edited, deleted, reacted to): emitted unless it is the state
   * already passed on, or an older one (isOlderState). */
  #emitChange(message, uuid, source, action) {
    const known = this.#seen.get(message.id);
    if (known && (known.key === stateKey(message) || isOlderState(message, known))) return;
    this.#remember(message);
    this.#emit("messagechange", { action, message, uuid, source });
  }

  /** Success frames, and `sync` events, that tell of a change, whoever caused it (this client
   * included). `source`: "live" or "sync" (an event has no uuid). */
  #broadcast(reply, source) {
    const uuid = reply.uuid ?? null;
    const message = reply.message && typeof reply.message === "object" && Number.isInteger(reply.message.id)
      ? reply.message : null;
    switch (reply.action) {
      case "new_message":
      case "direct_message":
        if (message) this.#emitMessage(message, uuid, source, reply.action);
        break;
      case "edit_message":
      case "delete_message":
      case "add_reaction":
      case "remove_reaction":
        if (message) this.#emitChange(message, uuid, source, reply.action);
        break;
      case "create_room":
      case "add_members":
        if (reply.room && typeof reply.room === "object") this.#emit("room", { room: reply.room, action: reply.action });
        break;
      case "leave_room":
        this.#emit("leave", { room: reply.room, user: reply.user });
        break;
      case "mark_read":
        this.#emit("read", {
          room: reply.room, lastReadId: reply.last_read_id, unreadCount: reply.unread_count,
        });
        break;
      case "typing":
        this.#emit("typing", { room: reply.room, user: reply.user });
        break;
      default:
        break;
    }
  }
}
