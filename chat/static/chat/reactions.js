// reactions.js: a message's reactions as chips ("👍 2", the user's own pressed) and the picker
// (common emoji, and a field for any other). Elements only: what a click means is the
// conversation's (data-act attributes); every emoji, a user's text, is text.

import { el } from "./dom.js";

/** The picker's ready-made choices. */
export const COMMON_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢"];
// The protocol's bound on an emoji, in characters (code points, as the server counts them).
export const MAX_EMOJI_LENGTH = 32;

/** `text` as an emoji the protocol takes (trimmed, 1..32 characters), or null. */
export function cleanEmoji(text) {
  const emoji = String(text ?? "").trim();
  const length = [...emoji].length;
  return length >= 1 && length <= MAX_EMOJI_LENGTH ? emoji : null;
}

/** Whether `username` is among those who reacted with `reaction`. */
export function reactedBy(reaction, username) {
  return Array.isArray(reaction.users) && reaction.users.includes(username);
}

/** The chips of `reactions` ([{emoji, users}], in order), or null when there is none. A click on
 * the user's own chip takes it back (data-act "unreact"), on another adds the user's ("react"). */
export function reactionChips(reactions, me) {
  if (!Array.isArray(reactions) || reactions.length === 0) return null;
  return el("ul", { class: "reactions", "aria-label": "Reactions" },
    ...reactions.map((reaction) => {
      const mine = reactedBy(reaction, me);
      const users = reaction.users || [];
      return el("li", {},
        el("button", {
          type: "button",
          class: mine ? "reaction mine" : "reaction",
          dataset: { act: mine ? "unreact" : "react", emoji: reaction.emoji },
          "aria-pressed": mine ? "true" : "false",
          title: users.join(", "),
        }, el("span", { class: "emoji", text: reaction.emoji }), " ", el("span", { class: "count", text: users.length })));
    }));
}

/** The picker of one message: the common emoji, and a field for any other. Hidden until its
 * message's React button opens it. */
export function reactionPicker(messageId) {
  const field = `emoji-${messageId}`;
  return el("form", { class: "picker", hidden: true, "aria-label": "Add a reaction" },
    ...COMMON_EMOJI.map((emoji) => el("button", {
      type: "button", class: "pick", dataset: { act: "react", emoji }, "aria-label": `React with ${emoji}`, text: emoji,
    })),
    el("label", { for: field, class: "visually-hidden", text: "Any emoji" }),
    el("input", { id: field, name: "emoji", class: "emoji-field", maxlength: 64, autocomplete: "off", placeholder: "any emoji" }),
    el("button", { type: "submit", class: "add-emoji", text: "Add" }),
    el("p", { class: "error", role: "alert" }));
}
