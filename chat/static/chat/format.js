// format.js: times in the viewer's own time zone and locale.

/** A Date for a protocol timestamp (seconds since the epoch, UTC). */
export function dateOf(timestamp) {
  return new Date(timestamp * 1000);
}

/** "14:05" today, "3 Mar 14:05" on another day, in the viewer's locale and time zone. */
export function shortTime(timestamp, now = new Date()) {
  const date = dateOf(timestamp);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (date.toDateString() === now.toDateString()) return time;
  return `${date.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
}

/** The full local date and time, for a tooltip or a notice. */
export function longTime(timestamp) {
  return dateOf(timestamp).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
}

/** The machine-readable form, for `<time datetime>`. */
export function isoTime(timestamp) {
  return dateOf(timestamp).toISOString();
}
