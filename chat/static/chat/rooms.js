// rooms.js: the list of rooms: name, a preview of the last message, an unread badge, the room
// with the newest activity first. It holds the rooms as the page knows them.

import { isOlderState } from "./chat-client.js";
import { el, moveBefore } from "./dom.js";
import { TOMBSTONE } from "./message-view.js";

const PREVIEW_LENGTH = 80;

/** How a room is called on this user's page: a direct room by the other person's name. */
export function roomTitle(room, me) {
  if (!room.is_direct) return room.name;
  const others = room.members.map((member) => member.username).filter((name) => name !== me);
  return others.length ? others.join(", ") : room.name;
}

function preview(message, me) {
  if (!message) return "No messages yet";
  const who = message.user.username === me ? "You" : message.user.username;
  const text = message.deleted ? TOMBSTONE : message.text.replace(/\s+/g, " ");
  const short = text.length > PREVIEW_LENGTH ? `${text.slice(0, PREVIEW_LENGTH - 1)}…` : text;
  return `${who}: ${short}`;
}

export class RoomList {
  #list;
  #empty;
  #me;
  #onOpen;
  #rooms = new Map();     // id -> room (list_rooms form), newest activity first
  #items = new Map();     // id -> <li>
  #openId = null;

  /**
   * @param {HTMLUListElement} list
   * @param {HTMLElement} empty shown while there is no room
   * @param {string} me the user's username
   * @param {(id: string) => void} onOpen called when a room is chosen
   */
  constructor(list, empty, me, onOpen) {
    this.#list = list;
    this.#empty = empty;
    this.#me = me;
    this.#onOpen = onOpen;
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-room]");
      if (button) this.#onOpen(button.dataset.room);
    });
  }

  get(id) { return this.#rooms.get(id) || null; }
  has(id) { return this.#rooms.has(id); }

  /** The direct room of this user and `username`, if the list has it. */
  directWith(username) {
    for (const room of this.#rooms.values()) {
      if (room.is_direct && room.members.some((member) => member.username === username)) return room;
    }
    return null;
  }

  /** Replace the list with list_rooms' answer (already newest first). A room for which the
   * page has seen a newer message than the answer knows keeps its own preview and count. */
  setAll(rooms) {
    const known = this.#rooms;
    this.#rooms = new Map();
    for (const room of rooms) {
      const mine = known.get(room.id);
      if (mine?.last_message && (!room.last_message || room.last_message.id < mine.last_message.id)) {
        this.#rooms.set(room.id, { ...room, last_message: mine.last_message, unread_count: mine.unread_count });
      } else {
        this.#rooms.set(room.id, { ...room });
      }
    }
    if (this.#openId && this.#rooms.has(this.#openId)) this.#rooms.get(this.#openId).unread_count = 0;
    this.#render();
  }

  /** A room made or changed (create_room, add_members): its members and name are taken, the
   * page's own count and preview kept. A new room comes first. */
  upsert(room) {
    const mine = this.#rooms.get(room.id);
    if (mine) {
      this.#rooms.set(room.id, { ...mine, name: room.name, members: room.members, is_direct: room.is_direct });
    } else {
      this.#putFirst({ ...room });
    }
    this.#render();
  }

  remove(id) {
    this.#rooms.delete(id);
    if (this.#openId === id) this.#openId = null;
    this.#render();
  }

  /** A user left `id`: drop them from its members. */
  removeMember(id, username) {
    const room = this.#rooms.get(id);
    if (!room) return;
    room.members = room.members.filter((member) => member.username !== username);
    this.#render();
  }

  /** A message arrived: the room's preview, its place (first), and its badge unless it is the
   * open room or the user's own message. Returns false for a room the list does not know. */
  onMessage(message, { isOpen }) {
    const room = this.#rooms.get(message.room);
    if (!room) return false;
    if (room.last_message && room.last_message.id >= message.id) return true;  // older: no change
    room.last_message = message;
    if (!isOpen && message.user.username !== this.#me) room.unread_count += 1;
    this.#putFirst(room);
    this.#render();
    return true;
  }

  /** A new state of a message (edited, deleted): the preview follows if it is its room's last.
   * Neither the order nor the badge changes: nothing new was said. */
  onChange(message) {
    const room = this.#rooms.get(message.room);
    const last = room?.last_message;
    if (!last || last.id !== message.id || isOlderState(message, last)) return;
    room.last_message = message;
    this.#render();
  }

  /** `room` at the head of the list (newest activity), wherever it was, if it was. */
  #putFirst(room) {
    this.#rooms.delete(room.id);
    this.#rooms = new Map([[room.id, room], ...this.#rooms]);
  }

  setUnread(id, count) {
    const room = this.#rooms.get(id);
    if (!room || room.unread_count === count) return;
    room.unread_count = count;
    this.#render();
  }

  /** Mark `id` as the open room (null: none); its badge is cleared. */
  setOpen(id) {
    this.#openId = id;
    const room = id && this.#rooms.get(id);
    if (room) room.unread_count = 0;
    this.#render();
  }

  #render() {
    this.#empty.hidden = this.#rooms.size > 0;
    for (const [id, item] of this.#items) {
      if (!this.#rooms.has(id)) {
        item.remove();
        this.#items.delete(id);
      }
    }
    let reference = this.#list.firstChild;
    for (const room of this.#rooms.values()) {
      let item = this.#items.get(room.id);
      if (!item) {
        item = el("li");
        this.#items.set(room.id, item);
      }
      this.#fill(item, room);
      if (item !== reference) moveBefore(this.#list, item, reference);
      reference = item.nextSibling;
    }
  }

  #fill(item, room) {
    const title = roomTitle(room, this.#me);
    const unread = room.unread_count || 0;
    const button = el("button", {
      type: "button",
      class: "room",
      dataset: { room: room.id },
      "aria-current": room.id === this.#openId ? "true" : null,
    },
    el("span", { class: "room-name", text: title }),
    unread > 0 ? el("span", { class: "badge" }, String(unread), el("span", { class: "visually-hidden", text: " unread" })) : null,
    el("span", { class: "preview", text: preview(room.last_message, this.#me) }));
    const old = item.firstChild;
    if (old && old.isEqualNode(button)) return;
    // Keep focus on the room's button when it is redrawn.
    const hadFocus = old && old === document.activeElement;
    item.replaceChildren(button);
    if (hadFocus) button.focus();
  }
}
