// composer.js: the message box. Enter sends, Shift+Enter breaks the line; typing is announced at
// most once every TYPING_INTERVAL while the text is a message (not a command).

// The typing notice is shown for a few seconds by the others' pages; one every 3 s keeps it up.
export const TYPING_INTERVAL = 3000;

export class Composer {
  #form;
  #input;
  #button;
  #lastTyping = 0;

  /**
   * @param {HTMLFormElement} form holding a textarea and a submit button
   * @param {{onSubmit: (text: string) => boolean, onTyping: () => void}} handlers `onSubmit`
   *   returns whether the text was taken (the box is then emptied)
   */
  constructor(form, { onSubmit, onTyping }) {
    this.#form = form;
    this.#input = form.querySelector("textarea");
    this.#button = form.querySelector("button[type=submit]");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (this.#input.disabled) return;
      if (onSubmit(this.#input.value)) {
        this.#input.value = "";
        this.#lastTyping = 0;
      }
      this.#input.focus();
    });
    this.#input.addEventListener("keydown", (event) => {
      // isComposing: Enter that ends an IME composition is not a send.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    this.#input.addEventListener("input", () => {
      const text = this.#input.value;
      const now = Date.now();
      if (!text.trim() || (text.startsWith("/") && !text.startsWith("//"))) return;
      if (now - this.#lastTyping < TYPING_INTERVAL) return;
      this.#lastTyping = now;
      onTyping();
    });
  }

  /** Allow typing (with a placeholder that says where the text goes), or not. */
  enable(enabled, placeholder = "") {
    this.#input.disabled = !enabled;
    this.#button.disabled = !enabled;
    this.#input.placeholder = placeholder;
  }

  focus() {
    this.#input.focus();
  }
}
