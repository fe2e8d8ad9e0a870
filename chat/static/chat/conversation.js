// conversation.js: the open room: its messages in id order (older ones loaded on scrolling up),
// the user's own set apart, notices from the page, who is typing and who is online.

import { el } from "./dom.js";
import { isoTime, longTime, shortTime } from "./format.js";
import { roomTitle } from "./rooms.js";

// A typing notice is shown this long after the last one (the typist's page sends one every 3 s).
export const TYPING_SHOWN = 6000;
// Messages kept on the page; past it the oldest go (scrolling up loads them again).
export const MAX_SHOWN = 1000;
// Scrolling to within this many pixels of the top loads older messages.
const NEAR_TOP = 48;
// Within this many pixels of the bottom the list follows new messages.
const NEAR_BOTTOM = 64;

export class Conversation {
  #ui;
  #me;
  #onLoadOlder;
  #room = null;            // the room object, or {draftTo} for a direct message not yet sent
  #byId = new Map();       // message id -> <li>
  #pending = new Map();    // uuid -> <li> of a message not yet stored
  #typing = new Map();     // username -> timer
  #hasMore = false;
  #loading = false;

  /**
   * @param {object} ui the page's elements: title, members, online, tools, messages, older, typing
   * @param {string} me the user's username
   * @param {() => void} onLoadOlder asks for the messages before the oldest shown
   */
  constructor(ui, me, onLoadOlder) {
    this.#ui = ui;
    this.#me = me;
    this.#onLoadOlder = onLoadOlder;
    ui.messages.addEventListener("scroll", () => {
      if (ui.messages.scrollTop < NEAR_TOP) this.#askOlder();
    });
    ui.older.addEventListener("click", () => this.#askOlder());
    this.close();
  }

  /** The open room's id (null for none, or for a direct message not yet made). */
  get roomId() { return this.#room?.id || null; }
  /** The user a not-yet-made direct room is for, or null. */
  get draftTo() { return this.#room?.draftTo || null; }
  get isOpen() { return this.#room !== null; }

  /** Show `room` (empty until its messages come), or a draft `{draftTo}` direct message. */
  open(room) {
    this.#room = room;
    this.#clear();
    this.describe(room);
    if (room.id) this.#ui.messages.setAttribute("aria-busy", "true");  // until showLatest
  }

  close() {
    this.#room = null;
    this.#clear();
    this.#ui.title.textContent = "Pick a room";
    this.#ui.members.textContent = "Choose a room on the list, or start a new one.";
    this.#ui.online.textContent = "";
    this.#ui.tools.hidden = true;
  }

  /** Title, members and tools for the open room (again, when its members change). */
  describe(room) {
    if (this.#room && room.id && this.#room.id === room.id) this.#room = room;
    if (room.draftTo) {
      this.#ui.title.textContent = room.draftTo;
      this.#ui.members.textContent = `Direct message to ${room.draftTo}: the first message starts it.`;
      this.#ui.tools.hidden = true;
      return;
    }
    this.#ui.title.textContent = roomTitle(room, this.#me);
    const names = room.members.map((member) => member.username).join(", ");
    this.#ui.members.textContent = `${room.is_direct ? "Direct message" : "Members"}: ${names}`;
    this.#ui.tools.hidden = false;
    this.#ui.addMembers.hidden = room.is_direct;
  }

  #clear() {
    this.#ui.messages.removeAttribute("aria-busy");
    this.#byId.clear();
    this.#pending.clear();
    for (const timer of this.#typing.values()) clearTimeout(timer);
    this.#typing.clear();
    this.#ui.messages.replaceChildren();
    this.#ui.online.textContent = "";
    this.#renderTyping();
    this.#setHasMore(false);
    this.#loading = false;
  }

  // --- messages ------------------------------------------------------------------------------

  /** The room's latest messages (select_room): shown, then the list goes to the bottom. */
  showLatest(messages, hasMore) {
    this.add(messages);
    this.#setHasMore(hasMore);
    this.#ui.messages.removeAttribute("aria-busy");
    this.#scrollToBottom();
  }

  /** Messages of the open room, from any source, in id order; one already shown is skipped. */
  add(messages, { ownUuid = null } = {}) {
    const list = this.#ui.messages;
    const follow = list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_BOTTOM;
    let own = false;
    for (const message of messages) {
      if (ownUuid && this.#pending.has(ownUuid)) {
        this.confirm(ownUuid, message);
        own = true;
        continue;
      }
      if (this.#byId.has(message.id)) continue;
      const item = this.#item(message);
      this.#insert(item, message.id);
      own ||= message.user.username === this.#me;
      if (this.#typing.has(message.user.username)) this.stopTyping(message.user.username);
    }
    if (follow || own) {
      this.#trim();
      this.#scrollToBottom();
    }
  }

  /** Older messages (load_history) above the ones shown, the view kept where it was. */
  showOlder(messages, hasMore) {
    const list = this.#ui.messages;
    const fromBottom = list.scrollHeight - list.scrollTop;
    for (const message of messages) {
      if (!this.#byId.has(message.id)) this.#insert(this.#item(message), message.id);
    }
    list.scrollTop = list.scrollHeight - fromBottom;
    this.#setHasMore(hasMore);
    this.#loading = false;
  }

  /** The older messages could not be loaded; scrolling up asks again. */
  olderFailed() {
    this.#loading = false;
  }

  /** The newest and oldest message ids shown (null when none). */
  newestId() { return this.#byId.size ? Math.max(...this.#byId.keys()) : null; }
  oldestId() { return this.#byId.size ? Math.min(...this.#byId.keys()) : null; }

  /** A message of the user's own, shown at once and marked as being sent until it is stored. */
  addPending(uuid, text) {
    const item = this.#item({ user: { username: this.#me }, text, timestamp: Date.now() / 1000 });
    item.classList.add("pending");
    item.dataset.uuid = uuid;
    item.querySelector(".state").textContent = "sending…";
    this.#pending.set(uuid, item);
    this.#ui.messages.append(item);
    this.#scrollToBottom();
  }

  /** The pending message `uuid` is stored as `message`. */
  confirm(uuid, message) {
    const item = this.#pending.get(uuid);
    if (!item) return;
    this.#pending.delete(uuid);
    if (this.#byId.has(message.id) || message.room !== this.roomId) {
      item.remove();  // already shown (a copy came first), or posted elsewhere
      return;
    }
    item.remove();
    const stored = this.#item(message);
    stored.dataset.uuid = uuid;
    this.#insert(stored, message.id);
  }

  /** The pending message `uuid` was refused: it stays, marked, with the reason. */
  fail(uuid, reason) {
    const item = this.#pending.get(uuid);
    if (!item) return;
    this.#pending.delete(uuid);
    item.classList.replace("pending", "failed");
    item.querySelector(".state").textContent = `not sent: ${reason}`;
  }

  /** A line (or lines) from the page itself, not a message: command answers, errors. */
  notice(lines, kind = "info") {
    const texts = Array.isArray(lines) ? lines : [lines];
    const item = el("li", { class: `notice ${kind}` }, ...texts.map((text) => el("span", { text })));
    this.#ui.messages.append(item);
    this.#scrollToBottom();
  }

  #item(message) {
    const own = message.user.username === this.#me;
    const time = message.id !== undefined
      ? el("time", { datetime: isoTime(message.timestamp), title: longTime(message.timestamp),
        text: shortTime(message.timestamp) })
      : null;
    return el("li", { class: own ? "message own" : "message", dataset: message.id !== undefined ? { id: message.id } : {} },
      el("p", { class: "meta" },
        el("span", { class: "author", text: message.user.username }), " ", time, " ",
        el("span", { class: "state" })),
      el("p", { class: "text", text: message.text }));
  }

  /** Put a stored message in id order, before the pending ones and among the notices. */
  #insert(item, id) {
    this.#byId.set(id, item);
    const list = this.#ui.messages;
    for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
      const nodeId = node.dataset.id;
      if (nodeId !== undefined && Number(nodeId) < id) {
        node.after(item);
        return;
      }
    }
    // Older than every stored message shown: first, or after leading notices if nothing is stored.
    const firstStored = list.querySelector("li[data-id]");
    if (firstStored) firstStored.before(item);
    else {
      const firstPending = list.querySelector("li.pending");
      if (firstPending) firstPending.before(item);
      else list.append(item);
    }
  }

  #trim() {
    if (this.#byId.size <= MAX_SHOWN) return;
    const ids = [...this.#byId.keys()].sort((a, b) => a - b);
    for (const id of ids.slice(0, this.#byId.size - MAX_SHOWN)) {
      this.#byId.get(id).remove();
      this.#byId.delete(id);
    }
    this.#setHasMore(true);
  }

  #scrollToBottom() {
    this.#ui.messages.scrollTop = this.#ui.messages.scrollHeight;
  }

  #setHasMore(hasMore) {
    this.#hasMore = hasMore;
    this.#ui.older.hidden = !hasMore;
  }

  #askOlder() {
    if (!this.#hasMore || this.#loading || !this.roomId) return;
    this.#loading = true;
    this.#onLoadOlder(this.oldestId());
  }

  // --- typing and presence ------------------------------------------------------------------

  /** `username` is typing (shown for TYPING_SHOWN unless they type again or post). */
  typing(username) {
    if (username === this.#me) return;
    clearTimeout(this.#typing.get(username));
    this.#typing.set(username, setTimeout(() => this.stopTyping(username), TYPING_SHOWN));
    this.#renderTyping();
  }

  stopTyping(username) {
    clearTimeout(this.#typing.get(username));
    if (this.#typing.delete(username)) this.#renderTyping();
  }

  #renderTyping() {
    const names = [...this.#typing.keys()];
    const line = this.#ui.typing;
    line.hidden = names.length === 0;
    if (names.length === 0) line.textContent = "";
    else if (names.length === 1) line.textContent = `${names[0]} is typing…`;
    else if (names.length === 2) line.textContent = `${names[0]} and ${names[1]} are typing…`;
    else line.textContent = `${names.length} people are typing…`;
  }

  /** The members online in the open room (who_is_online). */
  setOnline(usernames) {
    this.#ui.online.textContent = usernames.length ? `Online: ${usernames.join(", ")}` : "Online: nobody";
  }
}
