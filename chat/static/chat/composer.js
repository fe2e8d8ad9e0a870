// composer.js: the message box. Enter sends, Shift+Enter breaks the line; typing is announced at
// most once every TYPING_INTERVAL while the text is a message (not a command). It also edits one
// of the user's messages: Up in an empty box takes the last one (or an Edit control gives one),
// Enter saves, Escape cancels; the text that was in the box before comes back either way.

// The typing notice is shown for a few seconds by the others' pages; one every 3 s keeps it up.
export const TYPING_INTERVAL = 3000;

export class Composer {
  #form;
  #input;
  #button;
  #banner;
  #handlers;
  #lastTyping = 0;
  #editing = null;      // {id, draft}: the message being edited, and the box's text before
  #placeholder = "";

  /**
   * @param {HTMLFormElement} form holding a textarea and a submit button
   * @param {HTMLElement} banner shown while a message is edited; its button cancels
   * @param {object} handlers `onSubmit(text)` returns whether the text was taken (the box is then
   *   emptied); `onTyping()`; `onEditLast()` the message that Up in an empty box edits, or null;
   *   `onEdit(id, text)` returns whether the edit was taken; `onEditing(id | null)` edit mode
   *   began or ended
   */
  constructor(form, banner, handlers) {
    this.#form = form;
    this.#input = form.querySelector("textarea");
    this.#button = form.querySelector("button[type=submit]");
    this.#banner = banner;
    this.#handlers = handlers;
    banner.querySelector("button").addEventListener("click", () => {
      this.cancelEdit();
      this.#input.focus();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (this.#input.disabled) return;
      if (this.#editing) {
        if (handlers.onEdit(this.#editing.id, this.#input.value)) this.cancelEdit();
      } else if (handlers.onSubmit(this.#input.value)) {
        this.#input.value = "";
        this.#lastTyping = 0;
      }
      this.#input.focus();
    });
    this.#input.addEventListener("keydown", (event) => this.#onKey(event));
    this.#input.addEventListener("input", () => {
      const text = this.#input.value;
      const now = Date.now();
      if (this.#editing) return;  // an edit is no new message: nobody is told
      if (!text.trim() || (text.startsWith("/") && !text.startsWith("//"))) return;
      if (now - this.#lastTyping < TYPING_INTERVAL) return;
      this.#lastTyping = now;
      handlers.onTyping();
    });
  }

  /** The id of the message being edited, or null. */
  get editingId() { return this.#editing?.id ?? null; }

  #onKey(event) {
    if (event.isComposing) return;  // keys that end an IME composition are the IME's
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      this.#form.requestSubmit();
    } else if (event.key === "Escape" && this.#editing) {
      event.preventDefault();
      this.cancelEdit();
    } else if (event.key === "ArrowUp" && !this.#editing && this.#input.value === ""
               && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey) {
      const message = this.#handlers.onEditLast();
      if (!message) return;
      event.preventDefault();
      this.startEdit(message);
    }
  }

  /** Edit `message` ({id, text}) in the box; what the box held comes back afterwards. */
  startEdit(message) {
    if (this.#input.disabled) return;
    const draft = this.#editing ? this.#editing.draft : this.#input.value;
    this.#editing = { id: message.id, draft };
    this.#input.value = message.text;
    this.#input.placeholder = "Edit your message";
    this.#button.textContent = "Save";
    this.#banner.hidden = false;
    this.#form.classList.add("editing");
    this.#input.focus();
    this.#input.setSelectionRange(message.text.length, message.text.length);
    this.#handlers.onEditing(message.id);
  }

  /** Leave edit mode (saved or not): the box gets back what it held before. */
  cancelEdit() {
    if (!this.#editing) return;
    this.#input.value = this.#editing.draft;
    this.#editing = null;
    this.#input.placeholder = this.#placeholder;
    this.#button.textContent = "Send";
    this.#banner.hidden = true;
    this.#form.classList.remove("editing");
    this.#handlers.onEditing(null);
  }

  /** Allow typing (with a placeholder that says where the text goes), or not. */
  enable(enabled, placeholder = "") {
    this.cancelEdit();
    this.#input.disabled = !enabled;
    this.#button.disabled = !enabled;
    this.#placeholder = placeholder;
    this.#input.placeholder = placeholder;
  }

  focus() {
    this.#input.focus();
  }
}
