// message-view.js: one message's element, and its redrawing when the message changes (edited,
// deleted, reacted to): author and time, an "edited" mark with the edit's time on hover, the
// text, the reactions, and the controls (React; Edit and Delete on the user's own), the inline
// "Delete?" confirmation and the reaction picker. A deleted message is a tombstone: no text, no
// reactions, no controls. Text only, through dom.js.

import { el } from "./dom.js";
import { isoTime, longTime, shortTime } from "./format.js";
import { reactionChips, reactionPicker } from "./reactions.js";

export const TOMBSTONE = "message deleted";

/** The element of a stored message (with an id) or of one being sent (without). */
export function messageItem(message, me) {
  const item = el("li", { class: "message", dataset: message.id !== undefined ? { id: message.id } : {} });
  fillMessage(item, message, me);
  return item;
}

/** Draw `message` into its element again: what it shows follows the message's state. An open
 * picker or confirmation stays open, unless the message is now deleted. */
export function fillMessage(item, message, me) {
  const own = message.user.username === me;
  const stored = message.id !== undefined;
  const deleted = message.deleted === true;
  item.classList.toggle("own", own);
  item.classList.toggle("deleted", deleted);

  const time = stored
    ? el("time", { datetime: isoTime(message.timestamp), title: longTime(message.timestamp), text: shortTime(message.timestamp) })
    : null;
  const edited = stored && !deleted && message.edited_at != null
    ? el("span", { class: "edited", title: `Edited ${longTime(message.edited_at)}`, text: "edited" })
    : null;
  const state = item.querySelector(":scope > .meta .state") || el("span", { class: "state" });
  const meta = el("p", { class: "meta" },
    el("span", { class: "author", text: message.user.username }), " ", time, " ", edited, edited ? " " : null, state);
  const text = deleted
    ? el("p", { class: "text tombstone", text: TOMBSTONE })
    : el("p", { class: "text", text: message.text });

  const parts = [meta, text];
  if (stored && !deleted) {
    const picker = part(item, ".picker") || reactionPicker(message.id);
    parts.push(reactionChips(message.reactions, me));
    parts.push(controls(own, !picker.hidden));
    parts.push(part(item, ".confirm") || confirmation());
    parts.push(picker);
  }
  item.replaceChildren(...parts.filter(Boolean));
}

function part(item, selector) {
  return item.querySelector(`:scope > ${selector}`);
}

/** React for every stored message; Edit and Delete for the user's own. */
function controls(own, pickerOpen) {
  return el("div", { class: "controls" },
    el("button", { type: "button", class: "react-open", dataset: { act: "picker" },
      "aria-expanded": pickerOpen ? "true" : "false", text: "React" }),
    own ? el("button", { type: "button", class: "edit", dataset: { act: "edit" }, text: "Edit" }) : null,
    own ? el("button", { type: "button", class: "delete", dataset: { act: "delete" }, text: "Delete" }) : null);
}

/** The inline "Delete this message?" question, hidden until Delete is clicked. */
function confirmation() {
  return el("div", { class: "confirm", hidden: true, role: "group", "aria-label": "Confirm deletion" },
    el("span", { text: "Delete this message?" }), " ",
    el("button", { type: "button", class: "confirm-yes danger", dataset: { act: "confirm-delete" }, text: "Delete" }), " ",
    el("button", { type: "button", class: "confirm-no", dataset: { act: "cancel-delete" }, text: "Cancel" }));
}

/** Show (or hide) the picker of `item`; the React button says which. Returns the picker. */
export function showPicker(item, open) {
  const picker = part(item, ".picker");
  if (!picker) return null;
  picker.hidden = !open;
  item.querySelector(":scope > .controls .react-open")?.setAttribute("aria-expanded", open ? "true" : "false");
  if (!open) {
    picker.reset();
    picker.querySelector(".error").textContent = "";
  }
  return picker;
}

/** Show (or hide) the deletion question of `item`. Returns it. */
export function showConfirm(item, open) {
  const question = part(item, ".confirm");
  if (question) question.hidden = !open;
  return question;
}
