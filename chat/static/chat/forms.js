// forms.js: the small forms around the rooms: create a room, start a direct message, add
// members, leave. Each calls the handler it is given and shows the handler's error next to it.

/** "bob, carol dave" -> ["bob", "carol", "dave"]: commas or spaces, each name once. */
export function parseMembers(text) {
  return [...new Set(text.split(/[\s,]+/).filter(Boolean))];
}

/**
 * Run `handler(form)` on submit; while it runs the form's buttons are disabled; a rejection's
 * message goes to the form's `[role=alert]` element, and a success resets the form.
 */
export function bindForm(form, handler) {
  const alert = form.querySelector("[role=alert]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const buttons = form.querySelectorAll("button");
    buttons.forEach((button) => { button.disabled = true; });
    if (alert) alert.textContent = "";
    try {
      await handler(form);
      form.reset();
    } catch (error) {
      if (alert) alert.textContent = error?.message || String(error);
    } finally {
      buttons.forEach((button) => { button.disabled = false; });
    }
  });
}
