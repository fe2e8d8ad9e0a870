// conversation.js: the open room: its messages in id order (older ones loaded on scrolling up),
// the user's own set apart, each redrawn in place when it changes (edited, deleted, reacted to),
// what its controls ask for, notices from the page, who is typing and who is online.

import { isOlderState, sameState } from "./chat-client.js";
import { el } from "./dom.js";
import { fillMessage, messageItem, showConfirm, showPicker } from "./message-view.js";
import { cleanEmoji } from "./reactions.js";
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
  #actions;
  #room = null;            // the room object, or {draftTo} for a direct message not yet sent
  #byId = new Map();       // message id -> <li>
  #messages = new Map();   // message id -> the message as shown (its latest state)
  #pending = new Map();    // uuid -> <li> of a message not yet stored
  #typing = new Map();     // username -> timer
  #hasMore = false;
  #loading = false;

  /**
   * @param {object} ui the page's elements: title, members, online, tools, messages, older, typing
   * @param {string} me the user's username
   * @param {object} actions what the controls ask for: `onLoadOlder(beforeId)` (the messages
   *   before the oldest shown), `onEdit(message)`, `onDelete(id)`, `onReact(id, emoji, add)`
   */
  constructor(ui, me, actions) {
    this.#ui = ui;
    this.#me = me;
    this.#actions = actions;
    ui.messages.addEventListener("scroll", () => {
      if (ui.messages.scrollTop < NEAR_TOP) this.#askOlder();
    });
    ui.older.addEventListener("click", () => this.#askOlder());
    ui.messages.addEventListener("click", (event) => this.#onClick(event));
    ui.messages.addEventListener("submit", (event) => this.#onPickerSubmit(event));
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
    this.#messages.clear();
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
      if (this.#byId.has(message.id)) {
        this.update(message);  // a later state of it (a sync event carries the latest)
        continue;
      }
      const item = this.#item(message);
      this.#insert(item, message.id, message);
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
      if (!this.#byId.has(message.id)) this.#insert(this.#item(message), message.id, message);
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
    this.#insert(stored, message.id, message);
  }

  /** A new state of a message (edited, deleted, reactions): redrawn in place if it is shown,
   * unless it is older than the state shown. Returns whether it is shown. */
  update(message) {
    const item = this.#byId.get(message.id);
    if (!item) return false;
    const shown = this.#messages.get(message.id);
    if (shown && (isOlderState(message, shown) || sameState(message, shown))) return true;
    this.#messages.set(message.id, message);
    fillMessage(item, message, this.#me);
    return true;
  }

  /** The message `id` as shown, or null. */
  message(id) { return this.#messages.get(id) || null; }

  /** The user's newest message shown that may be edited (stored, not deleted), or null. */
  lastOwn() {
    let last = null;
    for (const message of this.#messages.values()) {
      if (message.user.username !== this.#me || message.deleted === true) continue;
      if (!last || message.id > last.id) last = message;
    }
    return last;
  }

  /** Mark the message being edited in the composer (null: none). */
  setEditing(id) {
    for (const item of this.#ui.messages.querySelectorAll("li.editing")) item.classList.remove("editing");
    if (id !== null) this.#byId.get(id)?.classList.add("editing");
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
    return messageItem(message, this.#me);
  }

  // --- the messages' controls ---------------------------------------------------------------

  #onClick(event) {
    const button = event.target.closest("button[data-act]");
    const item = button?.closest("li.message[data-id]");
    if (!item || !this.#ui.messages.contains(item)) return;
    const id = Number(item.dataset.id);
    const message = this.#messages.get(id);
    if (!message || message.deleted) return;
    switch (button.dataset.act) {
      case "edit":
        this.#actions.onEdit(message);
        break;
      case "delete":
        showPicker(item, false);
        showConfirm(item, true)?.querySelector(".confirm-no")?.focus();
        break;
      case "cancel-delete":
        showConfirm(item, false);
        item.querySelector(":scope > .controls .delete")?.focus();
        break;
      case "confirm-delete":
        showConfirm(item, false);
        this.#actions.onDelete(id);
        break;
      case "picker": {
        const open = button.getAttribute("aria-expanded") !== "true";
        for (const other of this.#byId.values()) if (other !== item) showPicker(other, false);
        showConfirm(item, false);
        showPicker(item, open);
        if (open) item.querySelector(":scope > .picker .pick")?.focus();
        break;
      }
      case "react":
      case "unreact":
        if (button.classList.contains("pick")) showPicker(item, false);
        this.#actions.onReact(id, button.dataset.emoji, button.dataset.act === "react");
        break;
      default:
        break;
    }
  }

  /** An emoji typed into a picker's field. */
  #onPickerSubmit(event) {
    const picker = event.target.closest("form.picker");
    if (!picker) return;
    event.preventDefault();
    const item = picker.closest("li.message[data-id]");
    const emoji = cleanEmoji(picker.elements.emoji.value);
    if (!item) return;
    if (emoji === null) {
      picker.querySelector(".error").textContent = "Type one emoji (up to 32 characters).";
      return;
    }
    showPicker(item, false);
    this.#actions.onReact(Number(item.dataset.id), emoji, true);
  }

  /** Put a stored message in id order, before the pending ones and among the notices. */
  #insert(item, id, message) {
    this.#byId.set(id, item);
    this.#messages.set(id, message);
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
      this.#messages.delete(id);
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
    this.#actions.onLoadOlder(this.oldestId());
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
