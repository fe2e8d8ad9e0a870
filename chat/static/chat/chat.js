// A minimal chat page: authenticate, pick a room, read and post messages.
const statusEl = document.getElementById("status");
const messagesEl = document.getElementById("messages");
const composer = document.getElementById("composer");
const textEl = document.getElementById("text");
const sendButton = composer.querySelector("button");
const configured = JSON.parse(document.getElementById("gateway-url").textContent);
const gatewayUrl = configured || `ws://${location.hostname}:8080/ws`;

let socket = null;
let username = null;
let currentRoom = null;

function uuid() { return crypto.randomUUID(); }
function send(frame) { socket.send(JSON.stringify({ uuid: uuid(), ...frame })); }

function showMessage(message) {
  const li = document.createElement("li");
  li.dataset.id = message.id;
  if (message.user.username === username) li.className = "own";
  const time = new Date(message.timestamp * 1000).toLocaleTimeString();
  li.textContent = `[${time}] ${message.user.username}: ${message.text}`;  // text, never HTML
  messagesEl.append(li);
  messagesEl.scrollTop = messagesEl.scrollHeight;
}

function onReply(reply) {
  if (reply.status === "error") { statusEl.textContent = `error: ${reply.error_message}`; return; }
  if (reply.action === "authenticate") { statusEl.textContent = "connected"; }
  if (reply.action === "select_room" && reply.room === currentRoom) {
    messagesEl.replaceChildren();
    reply.room_messages.forEach(showMessage);
    textEl.disabled = sendButton.disabled = false;
  }
  if (reply.action === "new_message" && reply.message.room === currentRoom
      && !messagesEl.querySelector(`[data-id="${reply.message.id}"]`)) {
    showMessage(reply.message);
  }
}

async function connect() {
  const response = await fetch("/api/auth/session-token/", { credentials: "same-origin" });
  const { token, username: name } = await response.json();
  username = name;
  socket = new WebSocket(gatewayUrl);
  socket.onopen = () => send({ action: "authenticate", token });
  socket.onmessage = (event) => onReply(JSON.parse(event.data));
  socket.onclose = () => { statusEl.textContent = "disconnected, retrying…"; setTimeout(connect, 2000); };
}

document.getElementById("rooms").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-room]");
  if (!button) return;
  document.querySelectorAll("nav button").forEach((b) => b.removeAttribute("aria-current"));
  button.setAttribute("aria-current", "true");
  currentRoom = button.dataset.room;
  send({ action: "select_room", room: currentRoom });
});

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!currentRoom || !textEl.value.trim()) return;
  send({ action: "new_message", room: currentRoom, text: textEl.value });
  textEl.value = "";
});
textEl.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); composer.requestSubmit(); }
});

connect();
