// commands.js: what the composer's text means, as classic chat servers read it. Pure: no DOM,
// no network, so that the rules are easy to read and to test.

/** The commands, in the order /help lists them. */
export const COMMANDS = [
  { name: "msg", usage: "/msg USER TEXT", help: "send USER a direct message" },
  { name: "who", usage: "/who", help: "who is online in this room" },
  { name: "time", usage: "/time", help: "the server's time and its number of connections" },
  { name: "help", usage: "/help", help: "this list" },
];

const KNOWN = new Set(COMMANDS.map((command) => command.name));

/**
 * What to do with the composer's text:
 * - `{kind: "empty"}`: nothing (blank text);
 * - `{kind: "message", text}`: post it (`//text` posts `/text`);
 * - `{kind: "command", name, to?, text?}`: a known command;
 * - `{kind: "error", message}`: an unknown command or a bad use of one; nothing is sent.
 */
export function parseInput(input) {
  if (!input.trim()) return { kind: "empty" };
  if (input.startsWith("//")) return { kind: "message", text: input.slice(1) };
  if (!input.startsWith("/")) return { kind: "message", text: input };
  const match = /^\/(\S*)\s*([\s\S]*)$/.exec(input.trim());
  const name = match[1].toLowerCase();
  const rest = match[2];
  if (!KNOWN.has(name)) {
    return { kind: "error", message: `Unknown command: /${match[1]}. Type /help for the list; //text sends "/text".` };
  }
  if (name === "msg") {
    const parts = /^(\S+)\s+([\s\S]*\S[\s\S]*)$/.exec(rest);
    if (!parts) return { kind: "error", message: "Usage: /msg USER TEXT" };
    return { kind: "command", name, to: parts[1], text: parts[2] };
  }
  return { kind: "command", name };
}

/** The lines /help shows. */
export function helpLines() {
  return [
    "Commands:",
    ...COMMANDS.map((command) => `${command.usage}: ${command.help}`),
    "Enter sends, Shift+Enter starts a new line; //text sends a message that starts with /.",
  ];
}
