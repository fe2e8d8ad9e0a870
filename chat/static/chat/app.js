// app.js: the chat page. Wires the protocol client (chat-client.js) to the room list, the open
// room and the composer (messages, edits, deletions, reactions); reads its settings from the
// page's `chat-config` JSON element.

import { ChatClient, newUuid } from "./chat-client.js";
import { helpLines, parseInput } from "./commands.js";
import { Composer } from "./composer.js";
import { Conversation } from "./conversation.js";
import { byId } from "./dom.js";
import { longTime } from "./format.js";
import { bindForm, parseMembers } from "./forms.js";
import { RoomList, roomTitle } from "./rooms.js";

// select_room answers the last 20: that many means there may be more.
const LATEST_COUNT = 20;
const HISTORY_PAGE = 50;
// who_is_online has no push: the open room asks this often.
const PRESENCE_REFRESH = 15000;
// Messages seen in a burst are marked read once.
const MARK_READ_DELAY = 300;
// Messages in rooms the list does not know (a room just made by someone else) are gathered.
const REFRESH_DELAY = 200;

const STATE_TEXT = {
  idle: "Starting…",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  stopped: "Disconnected",
};

const config = JSON.parse(byId("chat-config").textContent);
const me = config.username;

/** The CSRF token that the ticket's POST must carry: Django's cookie, else the page's own form's. */
function csrfToken() {
  const cookie = document.cookie.split("; ").find((pair) => pair.startsWith("csrftoken="));
  if (cookie) return decodeURIComponent(cookie.slice("csrftoken=".length));
  return document.querySelector("input[name=csrfmiddlewaretoken]")?.value || "";
}

/** A short-lived WebSocket ticket, through the session, for each connection: the page never holds
 * the user's permanent token. A session that ended goes back to the login page. */
async function getCredentials() {
  const response = await fetch(config.ticketUrl, {
    method: "POST", credentials: "same-origin", headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
  });
  if (response.status === 401 || response.status === 403) {
    window.location.assign(`${config.loginUrl}?next=${encodeURIComponent(window.location.pathname)}`);
    throw new Error("signed out");
  }
  if (!response.ok) throw new Error(`ticket: HTTP ${response.status}`);
  return { ticket: (await response.json()).ticket };
}

const client = new ChatClient({ url: config.gatewayUrl, credentials: getCredentials });
const layout = byId("app");
const status = byId("connection");
const rooms = new RoomList(byId("room-list"), byId("no-rooms"), me, (id) => openRoom(id));
const conversation = new Conversation({
  title: byId("room-title"),
  members: byId("room-members"),
  online: byId("online"),
  tools: byId("room-tools"),
  addMembers: byId("add-members-form"),
  messages: byId("messages"),
  older: byId("load-older"),
  typing: byId("typing"),
}, me, {
  onLoadOlder: loadOlder,
  onEdit: (message) => composer.startEdit(message),
  onDelete: deleteMessage,
  onReact: react,
});
const composer = new Composer(byId("composer"), byId("editing"), {
  onSubmit,
  onTyping,
  onEditLast: () => conversation.lastOwn(),
  onEdit: saveEdit,
  onEditing: (id) => conversation.setEditing(id),
});

let presenceTimer = null;
let markTimer = null;
let refreshTimer = null;
const markedUpTo = new Map();  // room id -> the newest id marked read from this page

// --- rooms ---------------------------------------------------------------------------------

async function refreshRooms() {
  try {
    rooms.setAll(await client.listRooms());
  } catch (error) {
    conversation.notice(`Could not load the rooms: ${error.message}`, "error");
    return;
  }
  if (conversation.roomId && !rooms.has(conversation.roomId)) closeRoom();
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshRooms, REFRESH_DELAY);
}

async function openRoom(id) {
  const room = rooms.get(id);
  if (!room) return;
  conversation.open(room);
  rooms.setOpen(id);
  layout.dataset.view = "room";
  composer.enable(true, `Message ${roomTitle(room, me)} (/help for commands)`);
  composer.focus();
  startPresence();
  try {
    const messages = await client.selectRoom(id);
    if (conversation.roomId !== id) return;
    conversation.showLatest(messages, messages.length >= LATEST_COUNT);
    markSeen();
  } catch (error) {
    if (conversation.roomId === id) conversation.notice(`Could not load the room: ${error.message}`, "error");
  }
}

/** A direct message to someone the user has no direct room with yet: made by the first message. */
function openDraft(username) {
  conversation.open({ draftTo: username });
  rooms.setOpen(null);
  layout.dataset.view = "room";
  composer.enable(true, `First message to ${username}`);
  composer.focus();
  stopPresence();
}

function closeRoom() {
  conversation.close();
  rooms.setOpen(null);
  layout.dataset.view = "rooms";
  composer.enable(false, "Pick a room first");
  stopPresence();
}

async function loadOlder(before) {
  const id = conversation.roomId;
  try {
    const { messages, hasMore } = await client.loadHistory(id, { before, limit: HISTORY_PAGE });
    if (conversation.roomId === id) conversation.showOlder(messages, hasMore);
  } catch (error) {
    if (conversation.roomId !== id) return;
    conversation.olderFailed();
    conversation.notice(`Could not load older messages: ${error.message}`, "error");
  }
}

/** Mark the open room read up to its newest message, while the page is being looked at. */
function markSeen() {
  clearTimeout(markTimer);
  markTimer = setTimeout(() => {
    const id = conversation.roomId;
    const newest = conversation.newestId();
    if (!id || newest === null || document.visibilityState !== "visible") return;
    if (newest <= (markedUpTo.get(id) || 0)) return;
    markedUpTo.set(id, newest);
    client.markRead(id, newest).catch(() => markedUpTo.delete(id));
  }, MARK_READ_DELAY);
}

// --- presence ------------------------------------------------------------------------------

/** Who is online in room `id`, shown under its title if it is still the open room. */
async function showOnline(id) {
  const online = await client.whoIsOnline(id);
  if (conversation.roomId === id) conversation.setOnline(online);
  return online;
}

async function refreshPresence() {
  const id = conversation.roomId;
  if (!id || client.state !== "connected") return;
  try {
    await showOnline(id);
  } catch {
    // The next refresh tries again.
  }
}

function startPresence() {
  stopPresence();
  refreshPresence();
  presenceTimer = setInterval(refreshPresence, PRESENCE_REFRESH);
}

function stopPresence() {
  clearInterval(presenceTimer);
  presenceTimer = null;
}

// --- the composer ------------------------------------------------------------------------

function onTyping() {
  if (conversation.roomId) client.typing(conversation.roomId);
}

/** Returns whether the text was taken (the composer then empties). */
function onSubmit(value) {
  const input = parseInput(value);
  if (input.kind === "empty") return false;
  if (input.kind === "error") {
    conversation.notice(input.message, "error");
    return false;  // nothing sent; the text stays to be corrected
  }
  if (input.kind === "command") {
    runCommand(input);
    return true;
  }
  sendText(input.text);
  return true;
}

function sendText(text) {
  const uuid = newUuid();
  const draftTo = conversation.draftTo;
  const roomId = conversation.roomId;
  conversation.addPending(uuid, text);
  if (draftTo) {
    client.directMessage(draftTo, text, { uuid }).then(async ({ room }) => {
      await refreshRooms();
      if (conversation.draftTo === draftTo) openRoom(room);
    }, (error) => conversation.fail(uuid, error.message));
  } else {
    client.sendMessage(roomId, text, { uuid }).then(
      (message) => conversation.confirm(uuid, message),
      (error) => conversation.fail(uuid, error.message),
    );
  }
}

// --- edits, deletions, reactions ---------------------------------------------------------

/** A new state of a message, from a reply or an event: the list's preview and the open room. */
function showChange(message) {
  rooms.onChange(message);
  if (message.room === conversation.roomId) conversation.update(message);
  if (message.deleted && composer.editingId === message.id) composer.cancelEdit();
}

/** The composer's edit of message `id` (Enter); returns whether edit mode may end. */
function saveEdit(id, text) {
  const shown = conversation.message(id);
  if (!text.trim()) {
    conversation.notice("A message cannot be empty: Escape keeps it as it was, Delete removes it.", "error");
    return false;
  }
  if (shown && shown.text === text) return true;  // nothing changed: nothing to send
  client.editMessage(id, text).then(showChange,
    (error) => conversation.notice(`Could not edit the message: ${error.message}`, "error"));
  return true;
}

function deleteMessage(id) {
  if (composer.editingId === id) composer.cancelEdit();
  client.deleteMessage(id).then(showChange,
    (error) => conversation.notice(`Could not delete the message: ${error.message}`, "error"));
}

function react(id, emoji, add) {
  const done = add ? client.addReaction(id, emoji) : client.removeReaction(id, emoji);
  done.then(showChange, (error) => conversation.notice(`Could not ${add ? "add" : "remove"} the reaction: ${error.message}`, "error"));
}

async function runCommand(command) {
  try {
    if (command.name === "help") {
      conversation.notice(helpLines());
    } else if (command.name === "time") {
      const { serverTime, connections } = await client.ping();
      conversation.notice(`Server time: ${longTime(serverTime)} (shown in your time zone); `
        + `${connections} connection${connections === 1 ? "" : "s"} on this gateway.`);
    } else if (command.name === "who") {
      const id = conversation.roomId;
      if (!id) {
        conversation.notice("/who: open a room first.", "error");
        return;
      }
      const online = await showOnline(id);
      conversation.notice(`Online here: ${online.length ? online.join(", ") : "nobody"}`);
    } else if (command.name === "msg") {
      await client.directMessage(command.to, command.text);
      conversation.notice(`Direct message sent to ${command.to}.`);
    }
  } catch (error) {
    conversation.notice(`/${command.name}: ${error.message}`, "error");
  }
}

// --- forms --------------------------------------------------------------------------------

bindForm(byId("new-room-form"), async (form) => {
  const room = await client.createRoom(form.elements.name.value.trim(), parseMembers(form.elements.members.value));
  rooms.upsert(room);
  form.closest("details").open = false;
  openRoom(room.id);
});

bindForm(byId("direct-form"), async (form) => {
  const username = form.elements.username.value.trim();
  if (username === me) throw new Error("That is you: pick someone else.");
  const room = rooms.directWith(username);
  form.closest("details").open = false;
  if (room) openRoom(room.id);
  else openDraft(username);
});

bindForm(byId("add-members-form"), async (form) => {
  const members = parseMembers(form.elements.members.value);
  const room = await client.addMembers(conversation.roomId, members);
  rooms.upsert(room);
  conversation.describe(rooms.get(room.id));
  conversation.notice(`Added: ${members.join(", ")}`);
});

bindForm(byId("leave-form"), async () => {
  const id = conversation.roomId;
  await client.leaveRoom(id);
  rooms.remove(id);
  if (conversation.roomId === id) closeRoom();
});

byId("back").addEventListener("click", closeRoom);

// --- what the connection tells ------------------------------------------------------------

client.addEventListener("state", ({ detail }) => {
  status.dataset.state = detail.state;
  status.textContent = STATE_TEXT[detail.state] || detail.state;
});

client.addEventListener("ready", () => {
  refreshRooms();
  refreshPresence();
  markSeen();
});

client.addEventListener("message", ({ detail: { message, uuid } }) => {
  const isOpen = message.room === conversation.roomId;
  if (!rooms.onMessage(message, { isOpen })) scheduleRefresh();  // a room new to this page
  if (isOpen) {
    conversation.add([message], { ownUuid: uuid });
    markSeen();
  }
});

// Edited, deleted, reacted to: by anyone, live or caught up on by sync.
client.addEventListener("messagechange", ({ detail: { message } }) => showChange(message));

// The change feed no longer reaches back to this page's cursor: the client took a fresh one;
// everything is loaded again (the room list comes with the `ready` that follows).
client.addEventListener("expired", () => {
  if (conversation.roomId) openRoom(conversation.roomId);
});

client.addEventListener("room", ({ detail: { room } }) => {
  rooms.upsert(room);
  if (room.id === conversation.roomId) conversation.describe(rooms.get(room.id));
});

client.addEventListener("leave", ({ detail: { room, user } }) => {
  if (user?.username === me) {
    rooms.remove(room);
    if (conversation.roomId === room) closeRoom();
    return;
  }
  rooms.removeMember(room, user?.username);
  if (room === conversation.roomId) conversation.describe(rooms.get(room));
});

client.addEventListener("read", ({ detail: { room, unreadCount } }) => {
  if (room !== conversation.roomId) rooms.setUnread(room, unreadCount);
});

client.addEventListener("typing", ({ detail: { room, user } }) => {
  if (room === conversation.roomId && user?.username) conversation.typing(user.username);
});

document.addEventListener("visibilitychange", markSeen);
window.addEventListener("online", () => client.reconnectNow());

closeRoom();
client.start();
